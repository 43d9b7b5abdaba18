"""End-to-end tests of squall-scheduler against a real squall-kvs, with fake executors
written in Python (cb_harness.FakeExecutor), through Cloudburst's wire protocol."""
from __future__ import annotations

import os
import re
import signal
import time
import uuid

import pytest
import zmq

from cb_harness import (Cluster, CloudburstClient, Scheduler, SchedulerError, cb, dump,
                        free_sched_offset,
                        internal, reference_class, shared, worker_binary)
from kvs_harness import wire

pb = wire()

FAST = ["--executor-deadline-ms", "800", "--refresh-ms", "200", "--pin-timeout-ms", "500",
        "--kvs-timeout-ms", "500"]


def square(lib, x):
    return x * x


def increment(lib, x):
    return x + 1


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, sched_extra=FAST).start()
    yield c
    c.stop()


@pytest.fixture
def client(cluster):
    with cluster.client() as c:
        yield c


def wait_until(pred, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def test_connect_replies_the_kvs_routing_host(client):
    assert client.connect() == "127.0.0.1"


def test_registration_is_stored_in_the_kvs_and_listed(cluster, client):
    r = client.register(square, "square")
    assert r.success
    client.register(increment, "increment")
    with cluster.anna() as anna:
        ts, body = anna.get_lww("funcs/square")
        v = cb.Value()
        v.ParseFromString(body)
        import cloudpickle
        assert cloudpickle.loads(v.body)(None, 7) == 49
        t = anna.get("funcs/index-allfuncs")
        assert t.lattice_type == pb.SET
        s = pb.SetValue()
        s.ParseFromString(t.payload)
        assert sorted(s.values) == [b"funcs/increment", b"funcs/square"]
    assert client.list() == ["increment", "square"]
    assert client.list("sq") == ["square"]
    assert client.list("zzz") == []


def test_bad_registrations_are_rejected_with_clear_errors(client):
    with pytest.raises(SchedulerError, match="body must be a serialized Value"):
        client.register(b"\xff\xff\xff\xff", "broken")
    with pytest.raises(SchedulerError, match="needs a UTF-8 name"):
        client.register(square, "")
    r = cb.GenericResponse()
    r.ParseFromString(client.raw(5001, b"\x0a\xff\xff\xff\xff\x0f"))
    assert not r.success and "malformed Function" in r.error_message
    fn = cb.Function(name="ok", body=dump(square).SerializeToString()).SerializeToString()
    bad_name = fn.replace(b"\x0a\x02ok", b"\x0a\x02\xff\xfe")  # invalid UTF-8 name
    r.ParseFromString(client.raw(5001, bad_name))
    assert not r.success and "UTF-8" in r.error_message
    assert client.list() == []


def test_registration_reports_a_failed_kvs_write_and_calls_go_on(cluster, client):
    ex = cluster.fake(0)
    client.register(increment, "increment")
    time.sleep(0.3)
    cluster.kvs.stop()
    with pytest.raises(SchedulerError, match="KVS write failed"):
        client.register(square, "square")
    assert client.connect() == "127.0.0.1"  # still serving
    time.sleep(1.0)  # several asynchronous refreshes against the dead KVS
    t0 = time.monotonic()
    for i in range(5):  # known functions route without the KVS, without stalls
        client.call("increment", [i])
    assert time.monotonic() - t0 < 1.0
    assert len(ex.wait_for("call", 5)) == 5


def test_one_shot_call_goes_to_a_live_executor_with_a_uuid_key(cluster, client):
    ex = cluster.fake(0)
    client.register(square, "square")
    time.sleep(0.3)
    r = client.call("square", [7])
    uuid.UUID(r.response_id)  # a UUID4 was filled in
    calls = ex.wait_for("call")
    assert len(calls) == 1
    assert calls[0].name == "square" and calls[0].response_key == r.response_id
    assert [v.body for v in calls[0].arguments.values] == [dump(7).body]
    assert calls[0].skip_status  # no ThreadStatus wanted after the call
    r2 = client.call("square", [1], response_key="mine")
    assert r2.response_id == "mine"
    assert ex.wait_for("call", 2)[1].response_key == "mine"


def test_calls_of_unknown_functions_or_without_executors_fail_clearly(cluster, client):
    with pytest.raises(SchedulerError) as e:
        client.call("nope", [1])
    assert e.value.error == cb.FUNC_NOT_FOUND and "not registered" in e.value.message
    client.register(square, "square")
    with pytest.raises(SchedulerError) as e:
        client.call("square", [1])
    assert e.value.error == cb.NO_RESOURCES and "no live executor" in e.value.message


def test_dead_or_departed_executor_is_no_longer_chosen(cluster, client):
    a, b = cluster.fake(0), cluster.fake(1)
    client.register(square, "square")
    time.sleep(0.4)
    for i in range(6):
        client.call("square", [i])
    assert wait_until(lambda: len(a.received["call"]) + len(b.received["call"]) == 6)
    assert a.received["call"] and b.received["call"]  # load is spread
    a.silence()
    time.sleep(1.5)  # > executor deadline (800 ms)
    before = len(a.received["call"])
    for i in range(6):
        client.call("square", [i])
    assert wait_until(lambda: len(b.received["call"]) >= 6 + 6 - before - 0)
    assert len(a.received["call"]) == before
    b.depart()  # running = false: dropped at once
    time.sleep(0.3)
    with pytest.raises(SchedulerError) as e:
        client.call("square", [1])
    assert e.value.error == cb.NO_RESOURCES


def test_bad_dags_are_rejected_with_clear_errors(cluster, client):
    cluster.fake(0)
    for f in ("a", "b", "c"):
        client.register(square, f)
    cases = [
        (["a", "b"], [("a", "b"), ("b", "a")], cb.EXECUTION_ERROR, "cycle"),
        (["a", "ghost"], [("a", "ghost")], cb.FUNC_NOT_FOUND, "'ghost' of DAG 'd' is not registered"),
        (["a", "b", "c"], [("a", "b"), ("a", "c")], cb.EXECUTION_ERROR, "exactly one sink"),
        (["a", "b"], [], cb.EXECUTION_ERROR, "not connected"),
    ]
    for fns, links, code, text in cases:
        with pytest.raises(SchedulerError) as e:
            client.register_dag("d", fns, links)
        assert e.value.error == code and text in e.value.message, e.value.message
    r = cb.GenericResponse()
    r.ParseFromString(client.raw(5004, b"\xff\x01garbage"))
    assert not r.success and "malformed Dag" in r.error_message
    client.register_dag("d", ["a", "b"], [("a", "b")])
    with pytest.raises(SchedulerError) as e:
        client.register_dag("d", ["a", "b"], [("a", "b")])
    assert e.value.error == cb.DAG_ALREADY_EXISTS


@pytest.mark.parametrize("anonymous", [False, True], ids=["squall-acks", "cloudburst-acks"])
def test_dag_call_sends_schedules_and_begin_triggers(cluster, client, anonymous):
    x, y = cluster.fake(0, anonymous_acks=anonymous), cluster.fake(1, anonymous_acks=anonymous)
    client.register(square, "square")
    client.register(increment, "increment")
    time.sleep(0.4)
    client.register_dag("pipe", ["square", "increment"], [("square", "increment")])
    pins = sorted(p.name for f in (x, y) for p in f.received["pin"])
    assert pins == ["increment", "square"]  # one each: fewest pins first
    sq_ex = x if x.received["pin"][0].name == "square" else y
    inc_ex = y if sq_ex is x else x
    time.sleep(0.3)
    r = client.call_dag("pipe", {"square": [3]}, output_key="out-1")
    assert r.response_id == "out-1"
    (s1,) = sq_ex.wait_for("schedule")
    (s2,) = inc_ex.wait_for("schedule")
    assert s1.target_function == "square" and list(s1.triggers) == ["BEGIN"]
    assert s2.target_function == "increment" and list(s2.triggers) == ["square"]
    assert s1.id == s2.id and s1.output_key == "out-1"
    assert dict(s1.locations) == {"square": sq_ex.id, "increment": inc_ex.id}
    assert [v.body for v in s1.arguments["square"].values] == [dump(3).body]
    (t,) = sq_ex.wait_for("trigger")
    assert t.source == "BEGIN" and t.target_function == "square" and t.id == s1.id
    assert inc_ex.received["trigger"] == []
    r2 = client.call_dag("pipe", {"square": [4]}, direct=True)
    uuid.UUID(r2.response_id)
    assert sq_ex.wait_for("schedule", 2)[1].response_address == client.response_address


@pytest.mark.parametrize("kind", ["REGULAR", "MULTIEXEC"])
def test_squall_executor_source_gets_no_begin_trigger_unless_multiexec(cluster, client, kind):
    """An executor reporting SQUALL_FEATURE_BEGIN_ON_SCHEDULE starts a plain source on
    its schedule, so the scheduler saves the BEGIN trigger (one send per source); a
    MULTIEXEC source still gets it, as Cloudburst executors always do (test above)."""
    feature = internal.SQUALL_FEATURE_BEGIN_ON_SCHEDULE
    x = cluster.fake(0, features=feature)
    name = f"solo_{kind.lower()}"
    client.register(square, name)
    time.sleep(0.4)
    client.register_dag(f"dag_{name}", [name], [], types={name: getattr(cb, kind)})
    time.sleep(0.3)
    client.call_dag(f"dag_{name}", {name: [3]}, output_key=f"out-{name}")
    (s,) = x.wait_for("schedule")
    assert list(s.triggers) == ["BEGIN"]
    triggers = x.wait_for("trigger", timeout=1.0 if kind == "REGULAR" else 10.0)
    assert [t.source for t in triggers] == ([] if kind == "REGULAR" else ["BEGIN"])


def _dealer(cluster, port):
    """A DEALER on a request port, framed as squall's Channel does ([b"", body])."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://127.0.0.1:{port + cluster.offset}")
    return ctx, s


def _reply(sock, timeout_ms=5000):
    assert sock.poll(timeout_ms), "no reply"
    frames = sock.recv_multipart()
    assert frames[0] == b"" and len(frames) == 2, frames
    r = cb.GenericResponse()
    r.ParseFromString(frames[1])
    return r


def test_dag_call_with_ack_failures_only_is_answered_only_when_refused(cluster, client):
    """squall extension DagCall.ack_failures_only: an accepted call (with an output key
    and a response address) gets no reply, a refused one gets its error, and without an
    output key the flag is ignored; a REQ client (Cloudburst's) is unaffected."""
    x, y = cluster.fake(0), cluster.fake(1)
    client.register(square, "square")
    client.register(increment, "increment")
    time.sleep(0.4)
    client.register_dag("quiet", ["square", "increment"], [("square", "increment")])
    time.sleep(0.3)
    ctx, d = _dealer(cluster, 5005)
    try:
        call = cb.DagCall(name="quiet", output_key="quiet-1", ack_failures_only=True,
                          response_address=client.response_address)
        call.function_args["square"].values.append(dump(3))
        d.send_multipart([b"", call.SerializeToString()])
        scheds = [s for f in (x, y) for s in f.wait_for("schedule")]
        assert sorted(s.target_function for s in scheds) == ["increment", "square"]
        assert {s.output_key for s in scheds} == {"quiet-1"}
        assert not d.poll(300)  # accepted: no acknowledgement
        missing = cb.DagCall(name="missing", output_key="quiet-2", ack_failures_only=True,
                             response_address=client.response_address)
        d.send_multipart([b"", missing.SerializeToString()])
        r = _reply(d)
        assert not r.success and r.error == cb.NO_SUCH_DAG and "missing" in r.error_message
        keyless = cb.DagCall(name="quiet", ack_failures_only=True,
                             response_address=client.response_address)
        d.send_multipart([b"", keyless.SerializeToString()])
        r = _reply(d)
        assert r.success
        uuid.UUID(r.response_id)  # the client learns the schedule id from the reply
    finally:
        d.close()
        ctx.term()
    assert client.call_dag("quiet", {"square": [2]}, output_key="req-1").response_id == "req-1"


def test_requests_with_bad_envelopes_are_dropped_and_multiframe_bodies_refused(cluster,
                                                                               client):
    ctx, d = _dealer(cluster, 5003)
    try:
        d.send(b"no delimiter")  # REP would drop it too
        d.send_multipart([b"x" * 300, b"", b""])  # an oversized envelope frame
        d.send_multipart([b"e"] * 9 + [b"", b""])  # too many envelope frames
        assert not d.poll(300)
        d.send_multipart([b"", b"a", b"b"])
        r = _reply(d)
        assert not r.success and r.error_message
        d.send_multipart([b"seq", b"", b"sq"])  # the envelope comes back as sent
        assert d.poll(5000)
        frames = d.recv_multipart()
        assert frames[:2] == [b"seq", b""] and len(frames) == 3
    finally:
        d.close()
        ctx.term()
    assert cluster.sched.alive()
    assert client.connect() == "127.0.0.1"


@pytest.mark.parametrize("case", ["both", "one", "multiexec"])
def test_downstream_schedule_is_carried_only_between_carrying_executors(cluster, client,
                                                                         case):
    """SQUALL_FEATURE_CARRY_SCHEDULE: when the source's and the sink's executors both
    report it (and the source is not MULTIEXEC), the sink's schedule is not sent: the
    source's schedule lists it in `carried`. Otherwise both schedules are sent and
    `carried` is empty, as for Cloudburst executors."""
    both = internal.SQUALL_FEATURE_BEGIN_ON_SCHEDULE | internal.SQUALL_FEATURE_CARRY_SCHEDULE
    x = cluster.fake(0, features=both)
    y = cluster.fake(1, features=both if case != "one" else 0)
    src, dst = f"src_{case}", f"dst_{case}"
    client.register(square, src)
    client.register(increment, dst)
    time.sleep(0.4)
    types = {src: cb.MULTIEXEC} if case == "multiexec" else {}
    client.register_dag(f"carry_{case}", [src, dst], [(src, dst)], types=types)
    src_ex = x if any(p.name == src for p in x.received["pin"]) else y
    dst_ex = y if src_ex is x else x
    time.sleep(0.3)
    client.call_dag(f"carry_{case}", {src: [3]}, output_key=f"out-{case}")
    (s1,) = src_ex.wait_for("schedule")
    assert s1.target_function == src
    if case == "both":
        assert list(s1.carried) == [dst]
        assert dst_ex.wait_for("schedule", timeout=0.5) == []
    else:
        assert list(s1.carried) == []
        (s2,) = dst_ex.wait_for("schedule")
        assert s2.target_function == dst and list(s2.carried) == []


def test_dag_call_of_unknown_dag_is_no_such_dag(client):
    with pytest.raises(SchedulerError) as e:
        client.call_dag("missing")
    assert e.value.error == cb.NO_SUCH_DAG


def test_deleted_dag_is_unpinned_tombstoned_and_stays_deleted(cluster, client):
    x = cluster.fake(0)
    client.register(square, "square")
    time.sleep(0.3)
    client.register_dag("solo", ["square"], [])
    with cluster.anna() as anna:
        assert anna.get_lww("solo") is not None
        client.delete_dag("solo")
        assert x.wait_for("unpin") == ["square"]
        assert anna.get_lww("solo") is None  # tombstone reads as KEY_DNE
    with pytest.raises(SchedulerError) as e:
        client.call_dag("solo")
    assert e.value.error == cb.NO_SUCH_DAG
    with pytest.raises(SchedulerError) as e:
        client.delete_dag("solo")
    assert e.value.error == cb.NO_SUCH_DAG
    client.register_dag("solo", ["square"], [])  # the name can be used again
    client.call_dag("solo", {"square": [2]})


def _start_peer(cluster: Cluster) -> Scheduler:
    """A second scheduler on the cluster's KVS, at another free offset below the
    ephemeral port range (offset + 20000 could collide with client connections' ports
    there)."""
    peer_offset = free_sched_offset()
    while abs(peer_offset - cluster.offset) < 100:
        peer_offset = free_sched_offset()
    return Scheduler(cluster.tmp, cluster.kvs.routing, peer_offset, FAST).start()


def test_peer_scheduler_takes_calls_and_sees_deletions(cluster, client):
    x = cluster.fake(0)
    peer = _start_peer(cluster)
    try:
        client.register(square, "square")
        time.sleep(0.3)
        client.register_dag("shared", ["square"], [])
        # the peer has no executors of its own offset: it must fetch the DAG, then
        # refuse for lack of executors (not for an unknown DAG)
        with CloudburstClient(offset=peer.offset) as pc:
            with pytest.raises(SchedulerError) as e:
                pc.call_dag("shared")
            assert e.value.error == cb.NO_RESOURCES
            client.delete_dag("shared")

            def peer_says_no_such_dag():  # it re-checks its DAGs every 200 ms
                try:
                    pc.call_dag("shared")
                except SchedulerError as e:
                    return e.error == cb.NO_SUCH_DAG
                return False
            assert wait_until(peer_says_no_such_dag, timeout=5)
            assert "forgotten" in peer.log_text()
    finally:
        assert peer.stop() == 0, peer.log_text()[-4000:]


def _index_counts(sched: Scheduler) -> tuple[int, int]:
    """(function index reads, unknown-name lookups answered without one), from the
    line a stopped scheduler logs."""
    m = re.search(r"function index: (\d+) reads, (\d+) unknown-name lookups",
                  sched.log_text())
    assert m, sched.log_text()[-3000:]
    return int(m.group(1)), int(m.group(2))


def _call_error(client: CloudburstClient, name: str) -> SchedulerError:
    with pytest.raises(SchedulerError) as e:
        client.call(name, [1])
    return e.value


def test_unknown_name_in_a_loop_reads_the_index_rarely_yet_peer_registrations_are_found(
        cluster, client):
    peer = _start_peer(cluster)
    calls = 400
    try:
        for _ in range(calls):
            e = _call_error(client, "typo")
            assert e.error == cb.FUNC_NOT_FOUND, e.message
            assert e.message == "function 'typo' is not registered"
        with CloudburstClient(offset=peer.offset) as pc:
            # registered through the peer, then called here at once: a name not looked
            # up since the last index read gets a read of its own
            pc.register(square, "square")
            assert _call_error(client, "square").error == cb.NO_RESOURCES
            # looked up (and missed) here first, then registered on the peer: found at
            # the latest SCHED_INDEX_RELOAD_MS (50 ms) later
            assert _call_error(client, "late").error == cb.FUNC_NOT_FOUND
            pc.register(increment, "late")
            assert wait_until(lambda: _call_error(client, "late").error == cb.NO_RESOURCES,
                              timeout=2.0, step=0.005)
    finally:
        assert peer.stop() == 0, peer.log_text()[-4000:]
    assert cluster.sched.stop() == 0, cluster.sched.log_text()[-4000:]
    reads, skipped = _index_counts(cluster.sched)
    assert 1 <= reads < calls // 4, (reads, skipped)
    assert skipped >= calls - reads, (reads, skipped)


def test_list_in_a_loop_reads_the_index_rarely_yet_shows_new_registrations(cluster,
                                                                          client):
    peer = _start_peer(cluster)
    lists = 300
    try:
        client.register(square, "square")
        for _ in range(lists):
            assert client.list() == ["square"]
        # registered through this scheduler: in the very next List
        client.register(increment, "increment")
        assert client.list() == ["increment", "square"]
        with CloudburstClient(offset=peer.offset) as pc:
            pc.register(square, "peer_square")
        # registered through the peer: in every List made SCHED_INDEX_RELOAD_MS (50 ms)
        # after the registration
        time.sleep(0.06)
        assert client.list() == ["increment", "peer_square", "square"]
    finally:
        assert peer.stop() == 0, peer.log_text()[-4000:]
    assert cluster.sched.stop() == 0, cluster.sched.log_text()[-4000:]
    reads, _ = _index_counts(cluster.sched)
    m = re.search(r"(\d+) lists answered without one", cluster.sched.log_text())
    assert m, cluster.sched.log_text()[-3000:]
    assert 2 <= reads < lists // 4, reads
    assert int(m.group(1)) >= lists + 2 - reads, (reads, m.group(1))


def test_malformed_requests_get_errors_and_the_scheduler_keeps_serving(cluster, client):
    ex = cluster.fake(0)
    client.register(square, "square")
    deep = b""
    for _ in range(2000):  # DagCall.continuation -> Continuation.call -> DagCall ...
        inner = b"\x22" + _varint(len(deep)) + deep  # Continuation.call
        deep = b"\x3a" + _varint(len(inner)) + inner  # DagCall.continuation
    for port, data in [(5001, b"\xff" * 10), (5002, b"\x12\xff"), (5004, b"\x1a\x05abc"),
                       (5005, deep), (5005, b"\x0a\x03\xff\xfe\xfd"), (5006, b""),
                       (5002, b"")]:
        r = cb.GenericResponse()
        r.ParseFromString(client.raw(port, data))
        assert not r.success and r.error_message, (port, data[:10])
    assert client.list("\xff") == []
    # PULL ports eat garbage silently
    ctx = zmq.Context()
    for port in (5007, 5008, 5010, 5011):
        s = ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 500)
        s.connect(f"tcp://127.0.0.1:{port + cluster.offset}")
        s.send(b"\xff\x00garbage")
        s.close()
    ctx.term()
    time.sleep(0.3)
    assert cluster.sched.alive()
    assert client.connect() == "127.0.0.1"
    client.call("square", [2])
    assert ex.wait_for("call")


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def test_one_shot_call_is_resent_when_its_executor_departs(cluster, client):
    a = cluster.fake(0)
    client.register(square, "square")
    time.sleep(0.3)
    r = client.call("square", [5])
    assert a.wait_for("call")
    b = cluster.fake(1)
    time.sleep(0.3)
    a.depart()
    calls = b.wait_for("call")
    assert len(calls) == 1 and calls[0].response_key == r.response_id


def test_dag_is_rerun_elsewhere_when_an_executor_dies(cluster, client):
    a = cluster.fake(0)
    client.register(square, "square")
    time.sleep(0.3)
    client.register_dag("one", ["square"], [])
    r = client.call_dag("one", {"square": [2]}, output_key="k1")
    assert a.wait_for("schedule")
    b = cluster.fake(1)
    time.sleep(0.3)
    a.silence()  # dies without a word: dropped after the deadline
    assert b.wait_for("pin")[0].name == "square"  # re-pinned
    (s,) = b.wait_for("schedule")
    assert s.output_key == "k1" and s.id == a.received["schedule"][0].id
    assert b.wait_for("trigger")[0].source == "BEGIN"
    assert r.response_id == "k1"


def test_references_steer_calls_to_the_node_caching_the_key(tmp_path):
    c = Cluster(tmp_path, sched_extra=FAST).start()
    try:
        near = c.fake(0, ip="127.0.0.3")
        far = c.fake(1, ip="127.0.0.2")
        Ref = reference_class()
        with c.client() as client, c.anna() as anna:
            client.register(square, "square")
            keys = shared.StringSet(keys=["hot-key", "other"]).SerializeToString()
            anna.put_lww("ANNA_METADATA|cache_ip|127.0.0.3", keys, int(time.time() * 1e6))
            time.sleep(0.8)  # a few locality refreshes (200 ms)
            for _ in range(6):
                client.call("square", [Ref("hot-key", True)])
            assert len(near.wait_for("call", 6)) == 6
            assert far.received["call"] == []
    finally:
        c.stop()


def _worker():
    try:
        return worker_binary()
    except FileNotFoundError:
        return None


@pytest.mark.skipif(_worker() is None, reason="squall-worker is not built yet")
def test_real_worker_runs_a_registered_function(tmp_path):
    c = Cluster(tmp_path, worker=True, executors=1, sched_extra=FAST).start()
    try:
        with c.client() as client, c.anna() as anna:
            client.register(square, "square")
            r = None
            deadline = time.monotonic() + 30
            while r is None and time.monotonic() < deadline:
                try:
                    r = client.call("square", [7])
                except SchedulerError as e:
                    assert e.error == cb.NO_RESOURCES  # executors still starting
                    time.sleep(0.2)
            assert r is not None, "no executor reported status within 30 s"
            got = None
            while got is None and time.monotonic() < deadline:
                got = anna.get_lww(r.response_id)
                time.sleep(0.05)
            assert got is not None
            v = cb.Value()
            v.ParseFromString(got[1])
            from cb_harness import load
            assert load(v) == 49
    finally:
        c.stop()


@pytest.mark.skipif(_worker() is None, reason="squall-worker is not built yet")
def test_real_worker_runs_a_dag_with_direct_and_kvs_results(tmp_path):
    c = Cluster(tmp_path, worker=True, executors=2, sched_extra=FAST).start()
    try:
        with c.client() as client, c.anna() as anna:
            client.register(square, "square")
            client.register(increment, "increment")
            deadline = time.monotonic() + 30
            while True:  # until both executors reported and took the pins
                try:
                    client.register_dag("pipe", ["square", "increment"],
                                        [("square", "increment")])
                    break
                except SchedulerError as e:
                    assert e.error == cb.NO_RESOURCES and time.monotonic() < deadline
                    time.sleep(0.3)
            client.call_dag("pipe", {"square": [7]}, direct=True)
            assert client.direct_result(timeout=20) == 50
            r = client.call_dag("pipe", {"square": [3]}, output_key="pipe-out")
            assert r.response_id == "pipe-out"
            got = None
            while got is None and time.monotonic() < deadline + 20:
                got = anna.get_lww("pipe-out")
                time.sleep(0.05)
            v = cb.Value()
            v.ParseFromString(got[1])
            from cb_harness import load
            assert load(v) == 10
    finally:
        c.stop()


def test_colocated_dag_is_placed_on_one_node_and_does_not_crash(tmp_path):
    # Cloudburst's scheduler died on any call of a DAG with colocated functions (§5 #19)
    c = Cluster(tmp_path, sched_extra=FAST).start()
    try:
        n2 = [c.fake(0, ip="127.0.0.2"), c.fake(1, ip="127.0.0.2")]
        n3 = [c.fake(2, ip="127.0.0.3"), c.fake(3, ip="127.0.0.3")]
        with c.client() as client:
            client.register(square, "square")
            client.register(increment, "increment")
            time.sleep(0.4)
            client.register_dag("co", ["square", "increment"], [("square", "increment")],
                                colocated=["square", "increment"])
            pinned = {p.name: f.ip for f in n2 + n3 for p in f.received["pin"]}
            assert pinned["square"] == pinned["increment"]
            time.sleep(0.3)
            client.call_dag("co", {"square": [2]})
            scheds = [s for f in n2 + n3 for s in f.wait_for("schedule", 1, timeout=0.5)]
            assert len(scheds) == 2
            assert len({loc.split(":")[0] for loc in scheds[0].locations.values()}) == 1
    finally:
        c.stop()


def test_continuation_runs_the_next_dag_under_the_same_id(cluster, client):
    x = cluster.fake(0)
    client.register(increment, "increment")
    time.sleep(0.3)
    client.register_dag("next", ["increment"], [])
    cont = cb.Continuation(name="next", id="sched-42", result=dump(5).SerializeToString(),
                           call=cb.DagCall(output_key="final"))
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, 1000)
    s.connect(f"tcp://127.0.0.1:{5011 + cluster.offset}")
    s.send(cont.SerializeToString())
    s.close()
    ctx.term()
    (sch,) = x.wait_for("schedule")
    assert sch.id == "sched-42" and sch.output_key == "final"
    assert [v.body for v in sch.arguments["increment"].values] == [dump(5).body]
    assert x.wait_for("trigger")[0].id == "sched-42"


def test_peer_learns_dags_from_scheduler_status_gossip(tmp_path):
    # two schedulers with one port offset on two loopback addresses; the first gossips
    c = Cluster(tmp_path, sched_extra=FAST + ["--peer", "127.0.0.5"]).start()
    peer = Scheduler(tmp_path, c.kvs.routing, c.offset, FAST + ["--bind", "127.0.0.5"],
                     host="127.0.0.5")
    try:
        c.fake(0)
        with c.client() as client:
            client.register(square, "square")
            time.sleep(0.3)
            client.register_dag("gossiped", ["square"], [])
        peer.start()
        assert wait_until(lambda: "learned DAG gossiped from a peer" in peer.log_text())
    finally:
        assert peer.stop() == 0, peer.log_text()[-4000:]
        c.stop()


def test_random_garbage_on_every_request_port_always_gets_a_reply(cluster, client):
    import random
    rnd = random.Random(1234)
    valid = [cb.Function(name="f", body=dump(square).SerializeToString()).SerializeToString(),
             cb.FunctionCall(name="f").SerializeToString(),
             cb.Dag(name="d").SerializeToString(), cb.DagCall(name="d").SerializeToString()]
    for i in range(300):
        port = rnd.choice([5001, 5002, 5003, 5004, 5005, 5006])
        if rnd.random() < 0.5:
            data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 64)))
        else:
            b = bytearray(rnd.choice(valid))
            for _ in range(rnd.randrange(1, 4)):
                if b:
                    b[rnd.randrange(len(b))] = rnd.randrange(256)
            data = bytes(b)
        reply = client.raw(port, data)  # raises TimeoutError if a REP socket wedged
        if port == 5003:
            shared.StringSet().ParseFromString(reply)
        else:
            cb.GenericResponse().ParseFromString(reply)  # valid UTF-8 protobuf
    assert cluster.sched.alive()
    assert client.connect() == "127.0.0.1"


def test_pinning_skips_silent_executors_and_gives_up_in_bounded_time(cluster, client):
    mute = cluster.fake(0, ack_pins=False)
    client.register(square, "square")
    client.register(increment, "increment")
    time.sleep(0.4)
    t0 = time.monotonic()
    with pytest.raises(SchedulerError) as e:  # Cloudburst retried forever (§5 #29)
        client.register_dag("p", ["square", "increment"], [("square", "increment")])
    assert time.monotonic() - t0 < 5  # one executor to try, 500 ms per round
    assert e.value.error == cb.NO_RESOURCES and "could not be pinned" in e.value.message
    assert sorted(mute.wait_for("unpin", 2)) == ["increment", "square"]  # undone
    good = cluster.fake(1)
    time.sleep(0.4)
    client.register_dag("p", ["square", "increment"], [("square", "increment")])
    assert sorted(p.name for p in good.received["pin"]) == ["increment", "square"]
    client.call_dag("p", {"square": [1]})
    assert len(good.wait_for("schedule", 2)) == 2


# ---- calls that lose their executor while no other is live (sched_retry.c) -----------

WAIT_MS = 1500  # --resend-wait-ms of the clusters below


@pytest.fixture
def short_wait(tmp_path):
    c = Cluster(tmp_path, sched_extra=FAST + ["--resend-wait-ms", str(WAIT_MS)]).start()
    yield c
    c.stop()


def call_direct(client, name, args, key):
    """A one-shot call whose result is PUSHed to the client's response socket."""
    fc = cb.FunctionCall(name=name, response_key=key, response_address=client.response_address)
    fc.arguments.values.extend(dump(a) for a in args)
    return client._generic(5002, fc.SerializeToString())


def direct_value(client, timeout):
    if not client.pull.poll(int(timeout * 1000)):
        return None
    v = cb.Value()
    v.ParseFromString(client.pull.recv())
    return v


def error_response(v):
    """The GenericResponse inside a Cloudburst error tuple ('ERROR: ...', bytes)."""
    from cb_harness import load
    text, raw = load(v)
    assert text.startswith("ERROR: ")
    r = cb.GenericResponse()
    r.ParseFromString(raw)
    return text, r


def kvs_error_response(anna, key, timeout, sched):
    """The GenericResponse of the error tuple that appears in the KVS at key."""
    got = None
    deadline = time.monotonic() + timeout
    while got is None and time.monotonic() < deadline:
        got = anna.get_lww(key)
        time.sleep(0.05)
    assert got is not None, sched.log_text()[-3000:]
    v = cb.Value()
    v.ParseFromString(got[1])
    return error_response(v)[1]


def sole_executor_took(cluster, send, kind="call"):
    """Starts one fake executor, registers square, sends (send()) a call it receives."""
    a = cluster.fake(0)
    with cluster.client() as admin:
        admin.register(square, "square")
    time.sleep(0.3)
    reply = send()
    assert a.wait_for(kind)
    return a, reply


def test_resent_call_with_no_live_executor_fails_fast_to_the_response_address(short_wait):
    with short_wait.client() as client:
        a, _ = sole_executor_took(short_wait,
                                  lambda: call_direct(client, "square", [3], "k-direct"))
        t0 = time.monotonic()
        a.depart()  # the only executor: the re-send finds nobody and parks the call
        v = direct_value(client, 10)
        took = time.monotonic() - t0
        assert v is not None, short_wait.sched.log_text()[-3000:]
        assert v.response_id == "k-direct"
        text, r = error_response(v)
        assert not r.success and r.error == cb.NO_RESOURCES
        assert r.error_type == "squall.NoExecutors"
        assert "'square' was not run" in r.error_message and f"{WAIT_MS} ms" in r.error_message
        assert WAIT_MS / 1000 - 0.2 <= took < WAIT_MS / 1000 + 3
        assert direct_value(client, 0.5) is None  # failed once
    log = short_wait.sched.log_text()
    assert "parked" in log and "failed 1" in log


def test_resent_call_without_response_address_fails_in_the_kvs(short_wait):
    with short_wait.client() as client, short_wait.anna() as anna:
        a, r = sole_executor_took(short_wait, lambda: client.call("square", [4]))
        a.silence()  # dropped after the 800 ms deadline, then parked for 1.5 s
        resp = kvs_error_response(anna, r.response_id, 10, short_wait.sched)
        assert resp.error_type == "squall.NoExecutors"


def test_result_already_in_the_kvs_is_not_overwritten_by_the_failure(short_wait):
    with short_wait.client() as client, short_wait.anna() as anna:
        a, r = sole_executor_took(short_wait,
                                  lambda: client.call("square", [4], response_key="k-done"))
        result = dump(16).SerializeToString()
        anna.put_lww("k-done", result, int(time.time() * 1e6))  # a.finished, then died
        a.depart()
        assert wait_until(lambda: "a result was already stored" in short_wait.sched.log_text()), \
            short_wait.sched.log_text()[-3000:]
        assert anna.get_lww("k-done")[1] == result
        assert r.response_id == "k-done"


def test_parked_call_goes_to_an_executor_that_comes_back_in_time(short_wait):
    with short_wait.client() as client:
        a, _ = sole_executor_took(short_wait,
                                  lambda: call_direct(client, "square", [5], "k-back"))
        a.depart()
        time.sleep(0.3)  # parked now
        b = short_wait.fake(1)  # an executor reports within the wait
        calls = b.wait_for("call")
        assert len(calls) == 1 and calls[0].response_key == "k-back"
        assert calls[0].response_address == client.response_address
        assert direct_value(client, WAIT_MS / 1000 + 1) is None  # no failure sent
    assert "parked call was re-sent" in short_wait.sched.log_text()


def test_call_whose_every_executor_is_lost_fails_after_the_last_try(short_wait):
    with short_wait.client() as client:
        fakes = [short_wait.fake(t) for t in range(3)]
        client.register(square, "square")
        time.sleep(0.3)
        call_direct(client, "square", [6], "k-unlucky")
        for n in range(3):  # each executor that gets the call departs at once
            assert wait_until(lambda: any(f.received["call"] and not f._silent.is_set()
                                          for f in fakes))
            holder = next(f for f in fakes if f.received["call"] and not f._silent.is_set())
            assert len(holder.received["call"]) == 1
            holder.depart()
        v = direct_value(client, 5)  # well before --resend-wait-ms would matter
        assert v is not None and v.response_id == "k-unlucky", short_wait.sched.log_text()
        _, resp = error_response(v)
        assert resp.error_type == "squall.NoExecutors"
        assert "each of the 3 executors it was sent to was lost" in resp.error_message


def test_dag_call_with_no_live_executor_fails_fast_to_the_response_address(short_wait):
    with short_wait.client() as client:
        def send():
            client.register_dag("one", ["square"], [])
            return client.call_dag("one", {"square": [2]}, direct=True, output_key="dag-out")
        a, r = sole_executor_took(short_wait, send, "schedule")
        a.depart()
        v = direct_value(client, 10)
        assert v is not None, short_wait.sched.log_text()[-3000:]
        assert v.response_id == "dag-out" == r.response_id
        _, resp = error_response(v)
        assert resp.error_type == "squall.NoExecutors"
        assert "DAG 'one' was not run" in resp.error_message


def slow_square(lib, x):
    import time as _t
    _t.sleep(1.0)
    return x * x


def _signal_worker(cluster, sig):
    """Sends sig to squall-worker's supervisor and every executor process."""
    pid = cluster.worker_proc.pid
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except FileNotFoundError:
        kids = []
    for p in [pid, *map(int, kids)]:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def _direct_for(client, key, timeout):
    """The first direct response tagged key (others, e.g. late results, are skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = direct_value(client, max(0.0, deadline - time.monotonic()))
        if v is not None and v.response_id == key:
            return v
    return None


def _call_when_live(client, name, args, key, timeout=60.0):
    """call_direct, retried while the scheduler knows no live executor."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call_direct(client, name, args, key)
        except SchedulerError as e:
            assert e.error == cb.NO_RESOURCES and time.monotonic() < deadline
            time.sleep(0.2)


@pytest.mark.skipif(_worker() is None, reason="squall-worker is not built yet")
def test_stopped_worker_fails_calls_within_seconds_and_a_returning_one_completes(tmp_path):
    c = Cluster(tmp_path, worker=True, executors=1,
                sched_extra=FAST + ["--resend-wait-ms", str(WAIT_MS)]).start()
    stopped = False
    try:
        with c.client() as client:
            client.register(slow_square, "slow_square")
            _call_when_live(client, "slow_square", [3], "k-stopped")
            time.sleep(0.3)
            _signal_worker(c, signal.SIGSTOP)  # the only worker hangs, mid-call
            stopped, t0 = True, time.monotonic()
            v = _direct_for(client, "k-stopped", 15)
            assert v is not None, c.sched.log_text()[-3000:]
            assert time.monotonic() - t0 < 0.8 + WAIT_MS / 1000 + 4  # not 330 s
            _, resp = error_response(v)
            assert resp.error_type == "squall.NoExecutors"
            _signal_worker(c, signal.SIGCONT)
            stopped = False
            parked = c.sched.log_text().count("parked for up to")
            _call_when_live(client, "slow_square", [4], "k-back")  # once it reports again
            time.sleep(0.3)
            _signal_worker(c, signal.SIGSTOP)
            stopped = True
            assert wait_until(lambda: c.sched.log_text().count("parked for up to") > parked)
            _signal_worker(c, signal.SIGCONT)  # back within the wait: the call completes
            stopped = False
            v = _direct_for(client, "k-back", 30)
            assert v is not None, c.sched.log_text()[-3000:]
            from cb_harness import load
            assert load(v) == 16
            # the stopped executor finished its copy, the re-sent one ran again: two
            again = _direct_for(client, "k-back", 30)
            assert again is not None and load(again) == 16
            assert "a parked call was re-sent" in c.sched.log_text()
    finally:
        if stopped:
            _signal_worker(c, signal.SIGCONT)
        c.stop()


def test_failure_written_to_a_stopped_kvs_does_not_stall_other_clients(tmp_path):
    # --kvs-timeout-ms 5000 (x 2 tries): a blocking write of the failure would hold the
    # scheduler's one thread for ~10 s; other clients must still be answered at once
    assert FAST[-2] == "--kvs-timeout-ms"
    slow_kvs = FAST[:-2]
    c = Cluster(tmp_path, sched_extra=slow_kvs + ["--kvs-timeout-ms", "5000",
                                                  "--resend-wait-ms", str(WAIT_MS)]).start()
    kvs_pid, stopped = c.kvs.proc.pid, False
    try:
        with c.client(timeout=12) as client, c.client(timeout=12) as other, c.anna() as anna:
            def send():
                client.register_dag("one", ["square"], [])
                return client.call_dag("one", {"square": [2]}, output_key="dag-stalled")
            a, r = sole_executor_took(c, send, "schedule")
            assert r.response_id == "dag-stalled"
            os.kill(kvs_pid, signal.SIGSTOP)
            stopped = True
            a.depart()  # parked; fails to the (stopped) KVS WAIT_MS later
            worst, t_end = 0.0, time.monotonic() + WAIT_MS / 1000 + 2.0
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                assert other.connect() == "127.0.0.1"
                worst = max(worst, time.monotonic() - t0)
                time.sleep(0.05)
            log = c.sched.log_text()
            assert "'one' (dag-stalled) failed after" in log, log[-3000:]
            assert worst < 2.0, f"a Connect waited {worst:.1f} s behind the KVS write"
            os.kill(kvs_pid, signal.SIGCONT)  # back within the write's first attempt
            stopped = False
            resp = kvs_error_response(anna, "dag-stalled", 15, c.sched)
            assert resp.error_type == "squall.NoExecutors"
            assert "DAG 'one' was not run" in resp.error_message
    finally:
        if stopped:
            os.kill(kvs_pid, signal.SIGCONT)
        c.stop()


@pytest.mark.skipif(_worker() is None, reason="squall-worker is not built yet")
def test_executor_killed_during_a_pin_wait_is_rerun_after_the_registration(tmp_path):
    # DAG q's square is pinned on the real executor 0, which ran a call of q. DAG p's
    # increment is being pinned on a fake whose ack takes 1.5 s when executor 0 is
    # SIGKILLed: its departure arrives during the pin wait. Re-running q's call there
    # re-entered pinning (q's square to the fake), whose wait swallowed p's ack: p
    # failed. The re-run must wait until p's pinning is over.
    c = Cluster(tmp_path, worker=True, executors=1,
                sched_extra=["--executor-deadline-ms", "3000", "--refresh-ms", "200",
                             "--pin-timeout-ms", "3000", "--pin-tries", "1",
                             "--kvs-timeout-ms", "500"]).start()
    try:
        with c.client() as client, c.client() as admin:
            client.register(square, "square")
            admin.register(increment, "increment")
            deadline = time.monotonic() + 30
            while True:  # once executor 0 reported
                r = client.register_dag("q", ["square"], [], check=False)
                if r.success or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert r.success, r.error_message
            client.call_dag("q", {"square": [3]}, direct=True, output_key="q-out")
            assert client.direct_result(20) == 9
            slow = c.fake(1, ack_delay=1.5)
            time.sleep(0.5)  # the fake is live: it has the fewest pins
            kids = open(f"/proc/{c.worker_proc.pid}/task/{c.worker_proc.pid}/children"
                        ).read().split()
            assert len(kids) == 1
            p = cb.Dag(name="p")
            p.functions.add(name="increment")
            admin._req(5004).send(p.SerializeToString())  # answered below
            time.sleep(0.4)  # p's pin is waiting for the fake's ack
            os.kill(int(kids[0]), signal.SIGKILL)
            r = cb.GenericResponse()
            r.ParseFromString(admin._req(5004).recv())
            assert r.success, r.error_message
            assert [f.name for f in slow.received["pin"]][0] == "increment"
            log = c.sched.log_text()
            # the lost executor's call is re-run, after the registration
            assert wait_until(lambda: "lost: DAG q schedule" in c.sched.log_text(), 15), log
            log = c.sched.log_text()
            assert log.index("registered DAG p") < log.index("lost: DAG q schedule")
            assert re.search(r"lost: DAG q schedule \S+ re-run \(ok\)", log), log[-3000:]
    finally:
        c.stop()
