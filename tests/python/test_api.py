"""The user-facing Python API against a real local cluster (squall.init, once per
module, in a tmp $SQUALL_HOME on a free port offset, always shut down):
@squall.function calls, map with progress, gather/wait, await, remote exceptions with
their type and traceback, remote print/logging forwarded, a 100 MB array passed by
reference, DAGs (fan-in order, chaining), init reuse, and squall.compat.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

import numpy as np
import pytest

import squall
from squall import _cluster
from squall.compat import CloudburstConnection, CloudburstReference
from kvs_harness import bin_dir
from test_cluster import cluster_offset

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("api") / "home"
    saved = {k: os.environ.get(k) for k in ("SQUALL_HOME", "SQUALL_BIN_DIR")}
    os.environ["SQUALL_HOME"] = str(home)
    os.environ.setdefault("SQUALL_BIN_DIR", str(bin_dir()))
    try:
        yield squall.init(home=home, port_offset=cluster_offset(), executors=2, timeout=90)
    finally:
        squall.shutdown()
        _cluster.down(home, grace=5.0)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@squall.function
def square(x):
    return x * x


@squall.function
def chatty(x):
    print(f"chatty got {x}")
    logging.getLogger("chatty").warning("warned about %s", x)
    return x


@squall.function
def fails(x):
    raise ValueError(f"no good: {x}")


@squall.function
def fails_oddly(x):
    cls = type("OddError", (Exception,), {"__module__": "no_such_module_anywhere"})
    raise cls(f"odd {x}")


@squall.function
def nap(seconds):
    time.sleep(seconds)
    return seconds


@squall.function
def array_stats(a):
    return float(a.sum()), a.shape, a.dtype.str


@squall.function
def left(x):
    return ["left", x]


@squall.function
def right(x):
    return ["right", x]


@squall.function
def join(a, b):
    return [a, b]


@squall.function
def add_one(x):
    return x + 1


def test_decorated_function_runs_remotely_and_still_locally(cluster):
    assert square(7) == 49
    fut = square.remote(7)
    assert isinstance(fut, squall.Future)
    assert fut.result(timeout=30) == 49
    assert fut.done() and fut.exception() is None
    seen = []
    fut.add_done_callback(lambda f: seen.append(f.result()))
    assert seen == [49]
    assert fut.get() == 49  # Cloudburst's name


def test_map_returns_results_in_order_and_shows_progress(cluster, capsys):
    assert square.map(range(12), progress=True, timeout=60) == [i * i for i in range(12)]
    err = capsys.readouterr().err
    assert "12/12" in err


def test_gather_and_wait(cluster):
    futs = [square.remote(i) for i in range(6)]
    assert squall.gather(futs, timeout=60) == [0, 1, 4, 9, 16, 25]
    slow, fast = nap.remote(3), square.remote(2)
    done, pending = squall.wait([slow, fast], timeout=30, return_when=squall.FIRST_COMPLETED)
    assert fast in done and slow in pending
    done, pending = squall.wait([slow, fast], timeout=60)
    assert not pending and slow.result() == 3


def test_future_can_be_awaited(cluster):
    async def main():
        return await asyncio.gather(square.remote(3), square.remote(4))
    assert asyncio.run(main()) == [9, 16]


def test_remote_exception_keeps_its_type_and_remote_traceback(cluster):
    with pytest.raises(ValueError, match="no good: 5") as info:
        fails.remote(5).result(timeout=30)
    exc = info.value
    assert "in fails" in str(exc.__cause__) and "ValueError: no good: 5" in str(exc.__cause__)
    assert "fails" in exc.remote_traceback
    assert exc.executor.startswith("127.0.0.1:")
    assert any(exc.executor in note for note in exc.__notes__)
    assert isinstance(fails.remote(1).exception(timeout=30), ValueError)


def test_unimportable_remote_exception_becomes_remote_error(cluster):
    with pytest.raises(squall.RemoteError, match="odd 2") as info:
        fails_oddly.remote(2).result(timeout=30)
    assert info.value.type_name == "no_such_module_anywhere.OddError"
    assert "fails_oddly" in info.value.remote_traceback


def test_call_timeout_option_stops_a_long_call(cluster):
    quick = nap.options(name="test_api.nap_quick", timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        quick.remote(20).result(timeout=30)
    assert time.monotonic() - t0 < 15
    assert "time" in str(info.value).lower()


def test_remote_print_and_logging_reach_the_caller_tagged_with_the_executor(cluster, capsys):
    assert chatty.remote("hi").result(timeout=30) == "hi"
    out, err = capsys.readouterr()
    assert "[executor 127.0.0.1:" in out and "] chatty got hi" in out
    assert "] WARNING:chatty:warned about hi" in err


def test_100mb_array_passed_by_reference(cluster):
    a = np.arange(100 * 1024 * 1024 // 8, dtype=np.float64)
    ref = squall.put(a)
    total, shape, dtype = array_stats.remote(ref).result(timeout=90)
    assert total == float(a.sum()) and shape == a.shape and dtype == a.dtype.str
    back = squall.get(ref)
    assert np.array_equal(back, a)


def test_dag_fan_in_follows_connection_order_and_runs_many_times(cluster):
    d = squall.dag("fanin", [(left, join), (right, join)])
    assert d(1) == [["left", 1], ["right", 1]]  # local run: the same semantics
    futs = [d.remote(i) for i in range(3)]
    assert squall.gather(futs, timeout=60) == [[["left", i], ["right", i]] for i in range(3)]
    flipped = squall.dag("fanin", [(right, join), (left, join)])
    assert flipped.name != d.name
    assert flipped.remote(7).result(timeout=30) == [["right", 7], ["left", 7]]


def test_chained_dag_passes_results_downstream(cluster):
    with pytest.raises(ValueError, match="already in this DAG"):
        square >> add_one >> add_one
    pipeline = square >> add_one >> add_one.options(name="test_api.add_one_again")
    assert pipeline(3) == 11
    assert pipeline.remote(3).result(timeout=30) == 11
    assert (square >> add_one).remote(4).result(timeout=30) == 17


def test_future_argument_is_resolved_on_the_executor(cluster):
    first = square.remote(3)
    assert add_one.remote(first).result(timeout=30) == 10


def test_init_twice_reuses_the_cluster(cluster):
    assert squall.init() is cluster
    before = dict(cluster.state.get("daemons", {}))
    assert squall.init(home=cluster.home) is cluster
    assert cluster.state.get("daemons", {}) == before


def test_cloudburst_compat_calls(cluster, capsys):
    conn = CloudburstConnection(f"127.0.0.1:{cluster.port_offset}")
    inc = conn.register(lambda lib, x: x + 1, "compat_inc")
    dbl = conn.register(lambda lib, x: 2 * x, "compat_dbl")
    assert inc(1).get() == 2
    rid = conn.exec_func("compat_dbl", [21])
    assert rid
    deadline = time.monotonic() + 30
    while True:  # Cloudburst's exec_func gives only the result key: poll it
        try:
            assert squall.get(rid) == 42
            break
        except KeyError:
            assert time.monotonic() < deadline, "exec_func result never stored"
            time.sleep(0.01)
    names = conn.list("compat_")
    assert names == ["compat_dbl", "compat_inc"]
    assert "compat_inc" in capsys.readouterr().out
    assert conn.register_dag("compat_dag", ["compat_inc", "compat_dbl"],
                             [("compat_inc", "compat_dbl")]) == (True, None)
    ok, err = conn.register_dag("compat_dag", ["compat_inc", "compat_dbl"],
                                [("compat_inc", "compat_dbl")])
    assert not ok and err == "DAG_ALREADY_EXISTS"
    assert conn.call_dag("compat_dag", {"compat_inc": 4}, direct_response=True) == 10
    assert conn.call_dag("compat_dag", {"compat_inc": [5]}).get(timeout=30) == 12
    conn.put_object("compat_obj", {"a": 1})
    assert conn.get_object("compat_obj") == {"a": 1}
    conn.put_object("compat_set", {1, 2})
    assert conn.get_object("compat_set") == {1, 2}
    ref = squall.put(np.ones(4))
    assert inc(CloudburstReference(ref.key)).get().tolist() == [2.0] * 4
    assert conn.delete_dag("compat_dag") == (True, None)
    assert conn.get_function("no_such_function") is None


# ---- the transport: direct responses pushed to this process -----------------------------

@squall.function
def crashes_once(marker):
    if not os.path.exists(marker):  # the scheduler's re-send then succeeds
        open(marker, "w").close()
        os._exit(7)
    return "survived"


def _stored(cluster, key):
    """True when the KVS holds a value under key."""
    try:
        cluster.kvs.get(key)
        return True
    except KeyError:
        return False


def test_direct_call_result_is_pushed_and_never_stored_in_the_kvs(cluster):
    fut = square.remote(5)
    assert fut.result(timeout=30) == 25
    time.sleep(0.2)  # a KVS write, were there one, would have landed by now
    assert not _stored(cluster, fut.key)
    assert not _stored(cluster, fut.key + ".out")


def test_output_is_pushed_before_the_result_and_not_stored(cluster, capsys):
    fut = chatty.remote("pushed")
    assert fut.result(timeout=30) == "pushed"
    out, err = capsys.readouterr()  # printed before the future completed
    assert "] chatty got pushed" in out and "warned about pushed" in err
    assert not _stored(cluster, fut.key + ".out")


def test_dag_result_and_every_functions_output_are_pushed(cluster, capsys):
    fut = (chatty >> add_one).remote(41)
    assert fut.result(timeout=30) == 42
    seen = ""
    deadline = time.monotonic() + 5  # an upstream's output may trail the sink's result
    while "chatty got 41" not in seen and time.monotonic() < deadline:
        time.sleep(0.02)
        seen += capsys.readouterr().out
    assert "] chatty got 41" in seen
    assert not _stored(cluster, fut.key)


def test_remote_error_is_pushed_not_stored(cluster):
    fut = fails.remote(9)
    with pytest.raises(ValueError, match="no good: 9"):
        fut.result(timeout=30)
    assert not _stored(cluster, fut.key)


def test_timeout_and_crash_reports_arrive_by_push(cluster, tmp_path):
    quick = nap.options(name="test_api.nap_push_timeout", timeout=1.0)
    t0 = time.monotonic()
    fut = quick.remote(20)
    with pytest.raises(squall.RemoteError) as info:
        fut.result(timeout=30)
    assert info.value.type_name == "squall.TimeoutError"
    assert isinstance(info.value, squall.RemoteTimeoutError)
    assert isinstance(info.value, TimeoutError)  # caught by `except TimeoutError` too
    assert time.monotonic() - t0 < 15  # the supervisor's push, not the client's deadline
    assert not _stored(cluster, fut.key)
    fut = crashes_once.remote(str(tmp_path / "crashed"))
    with pytest.raises(squall.RemoteError) as info:
        fut.result(timeout=30)
    assert info.value.type_name == "squall.ExecutorCrashed"
    assert isinstance(info.value, squall.ExecutorCrashed)
    assert not _stored(cluster, fut.key)
    _keeps_serving()


def _keeps_serving():
    """The node serves again once the supervisor restarted the executors (a crashing
    call re-sent by the scheduler may have taken both down for a moment)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            assert square.remote(12).result(timeout=30) == 144
            return
        except squall.SchedulerError as e:
            assert e.error == "NO_RESOURCES" and time.monotonic() < deadline
            time.sleep(0.2)


def test_many_outstanding_futures_share_one_socket_matched_by_id(cluster):
    from squall import _api
    before = _api._receiver().responses.received
    futs = [square.remote(i) for i in range(300)]
    assert len({f.key for f in futs}) == 300
    assert squall.gather(futs, timeout=90) == [i * i for i in range(300)]
    assert _api._receiver().responses.received - before >= 300


def test_malformed_message_on_the_response_socket_is_skipped(cluster):
    zmq = pytest.importorskip("zmq")
    from squall import _api
    rx = _api._receiver()
    before = rx.responses.malformed
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    try:
        push.connect(rx.address)
        push.send(b"\xff\xff\xff\xff")                 # not a Value
        push.send_multipart([b"\x0a\x01x", b"two"])    # a Value is one frame
        push.send(b"\x0a\x01x\xa2\x06\x03" + b"\xff\xfe\xfd")  # response_id not UTF-8
        push.send(b"\x0a\x01x\xa2\x06\x07nobody!")     # well-formed, unknown id: ignored
        assert square.remote(6).result(timeout=30) == 36
        deadline = time.monotonic() + 5
        while rx.responses.malformed - before < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rx.responses.malformed - before == 3
        assert add_one.remote(1).result(timeout=30) == 2
    finally:
        push.close(0)
        ctx.term()


@squall.function
def big_list(n):
    return list(range(n))


@squall.function
def total(xs):
    return sum(xs)


def test_finished_future_passed_as_argument_is_stored_for_the_executor(cluster):
    first = square.remote(4)
    assert first.result(timeout=30) == 16
    assert add_one.remote(first).result(timeout=30) == 17
    big = big_list.remote(50_000)  # a result too large to keep serialized: dumped again
    assert len(big.result(timeout=30)) == 50_000
    assert total.remote(big).result(timeout=30) == sum(range(50_000))
    assert squall.gather([add_one.remote(square.remote(i)) for i in range(3)],
                         timeout=60) == [1, 2, 5]


def test_compat_dag_direct_response_is_pushed_and_kvs_mode_still_stores(cluster):
    conn = CloudburstConnection(f"127.0.0.1:{cluster.port_offset}")
    conn.register(lambda lib, x: x + 1, "compat_push_inc")
    conn.register(lambda lib, x: 2 * x, "compat_push_dbl")
    assert conn.register_dag("compat_push", ["compat_push_inc", "compat_push_dbl"],
                             [("compat_push_inc", "compat_push_dbl")]) == (True, None)
    assert conn.call_dag("compat_push", {"compat_push_inc": 4}, direct_response=True,
                         output_key="compat_push_direct") == 10
    assert [conn.call_dag("compat_push", {"compat_push_inc": i}, direct_response=True)
            for i in range(5)] == [2 * (i + 1) for i in range(5)]
    time.sleep(0.2)
    assert not _stored(cluster, "compat_push_direct")
    fut = conn.call_dag("compat_push", {"compat_push_inc": 5}, output_key="compat_push_kvs")
    assert fut.get(timeout=30) == 12
    assert conn.get_object("compat_push_kvs") == 12  # Cloudburst's contract: in the KVS
    assert conn.delete_dag("compat_push") == (True, None)


def test_scheduler_refusal_of_a_pipelined_call_fails_its_future(cluster):
    from squall import _api
    d = squall.dag("test_api_never_registered", [(square, add_one)])
    for f in d.functions:
        f._ensure_registered()
    _api._state["registered"]["dag:" + d.name] = True  # the scheduler never heard of it
    fut = d.remote(1)  # returns at once: the refusal arrives later
    with pytest.raises(squall.SchedulerError, match="NO_SUCH_DAG"):
        fut.result(timeout=10)
    assert square.remote(2).result(timeout=30) == 4


def test_result_receives_in_the_waiting_caller_and_hands_back_to_the_receiver(cluster):
    """Leader/follower (_Receiver.lead): a caller in result() receives its own result;
    with several callers one leads and the others' futures complete all the same; a
    future nobody waits on completes once the leader left (the receiver thread is back)."""
    from squall import _api
    rx = _api._receiver()
    f = square.remote(8)
    assert rx.lead(f, 30) is True and f.done() and f.result() == 64
    with rx.turn:
        rx.leader = -1  # another thread leads: this one follows
    try:
        g = square.remote(9)
        assert rx.lead(g, 1) is False
    finally:
        with rx.turn:
            rx.leader = None
            rx.turn.notify_all()
    assert g.result(timeout=30) == 81
    results = {}

    def wait_for(i):
        results[i] = square.remote(i).result(timeout=30)

    threads = [threading.Thread(target=wait_for, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: i * i for i in range(4)}
    done = threading.Event()
    square.remote(5).add_done_callback(lambda _f: done.set())
    assert square.remote(6).result(timeout=30) == 36
    assert done.wait(30)
    assert rx.leader is None and rx.thread.is_alive()
