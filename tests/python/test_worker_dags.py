"""squall-worker end to end: DAGs (DagSchedule + DagTrigger) executor to executor, and
the user library's get/put/send/recv, against a real KVS and worker."""
from __future__ import annotations

import time
import uuid

import pytest

from worker_harness import dump, error_fields, is_error, worker_client


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    d = tmp_path_factory.mktemp("worker-dag")
    with worker_client(d, extra=["--function-ttl-ms", "0"]) as client:
        yield client


def run_dag(node, name, functions, links, placement, fixed=None, direct=True,
            multiexec=None, order=None, begin_order=None):
    """Sends one DagSchedule per function to its executor, then BEGIN triggers to the
    sources. Returns the schedule id."""
    cb = node.cb
    dag = cb.Dag(name=name)
    for f in functions:
        ref = dag.functions.add(name=f)
        if multiexec and f in multiexec:
            ref.type = cb.MULTIEXEC
            for bad in multiexec[f]:
                kind, body = dump(bad)
                ref.invalid_results.append(cb.Value(body=body, type=kind).SerializeToString())
    for s, t in links:
        dag.connections.add(source=s, sink=t)
    sid = str(uuid.uuid4())
    sinks = {t for _, t in links}
    sources = [f for f in functions if f not in sinks]
    for f in (order or functions):
        sch = cb.DagSchedule(id=sid, target_function=f, start_time=time.time())
        sch.dag.CopyFrom(dag)
        ups = [s for s, t in links if t == f]
        sch.triggers.extend(ups or ["BEGIN"])
        for g, tid in placement.items():
            sch.locations[g] = f"127.0.0.1:{tid}"
        for g, vals in (fixed or {}).items():
            sch.arguments[g].CopyFrom(node.args(vals))
        if direct:
            sch.response_address = node.response_address
        node.push(4030, placement[f], sch.SerializeToString())
    for f in (begin_order or sources):
        trig = cb.DagTrigger(id=sid, target_function=f, source="BEGIN")
        node.push(4040, placement[f], trig.SerializeToString())
    return sid


def test_two_function_dag_with_direct_response(node):
    node.register("sq", lambda lib, x: x * x)
    node.register("inc", lambda lib, x: x + 1)
    run_dag(node, "sq-inc", ["sq", "inc"], [("sq", "inc")], {"sq": 0, "inc": 1},
            fixed={"sq": [6]})
    assert node.recv_direct() == 37


def test_dag_result_goes_to_kvs_under_schedule_id_without_response_address(node):
    sid = run_dag(node, "sq-inc", ["sq", "inc"], [("sq", "inc")], {"sq": 1, "inc": 0},
                  fixed={"sq": [3]}, direct=False)
    assert node.get_result(sid) == 10


def test_fan_out_fan_in_orders_arguments_by_connections(node):
    node.register("src", lambda lib, x: x)
    node.register("left", lambda lib, x: f"L{x}")
    node.register("right", lambda lib, x: (time.sleep(0.3), f"R{x}")[1])
    node.register("join", lambda lib, a, b: a + "+" + b)
    links = [("src", "left"), ("src", "right"), ("left", "join"), ("right", "join")]
    place = {"src": 0, "left": 1, "right": 0, "join": 1}
    # left finishes first, yet join's arguments follow the DAG's connections
    run_dag(node, "diamond", ["src", "left", "right", "join"], links, place, fixed={"src": [1]})
    assert node.recv_direct() == "L1+R1"
    links2 = [("src", "right"), ("src", "left"), ("right", "join"), ("left", "join")]
    run_dag(node, "diamond2", ["src", "left", "right", "join"], links2, place,
            fixed={"src": [2]})
    assert node.recv_direct() == "R2+L2"


def test_tuple_result_is_split_into_arguments_downstream(node):
    node.register("pair", lambda lib: (3, 4))
    node.register("mul", lambda lib, a, b: a * b)
    run_dag(node, "split", ["pair", "mul"], [("pair", "mul")], {"pair": 0, "mul": 1})
    assert node.recv_direct() == 12


def test_trigger_before_schedule_still_runs(node):
    # BEGIN triggers sent first, schedules after: the executor keeps the trigger
    cb = node.cb
    dag = cb.Dag(name="solo")
    dag.functions.add(name="sq")
    sid = str(uuid.uuid4())
    node.push(4040, 0, cb.DagTrigger(id=sid, target_function="sq", source="BEGIN")
              .SerializeToString())
    time.sleep(0.2)
    sch = cb.DagSchedule(id=sid, target_function="sq", response_address=node.response_address)
    sch.dag.CopyFrom(dag)
    sch.triggers.append("BEGIN")
    sch.arguments["sq"].CopyFrom(node.args([5]))
    node.push(4030, 0, sch.SerializeToString())
    assert node.recv_direct() == 25


def test_duplicate_trigger_does_not_run_twice(node):
    node.register("count", lambda lib, k: lib.put(k, (lib.get(k) or 0) + 1) and lib.get(k))
    key = "dup-" + uuid.uuid4().hex
    sid = run_dag(node, "once", ["count"], [], {"count": 0}, fixed={"count": [key]})
    assert node.recv_direct() == 1
    trig = node.cb.DagTrigger(id=sid, target_function="count", source="BEGIN")
    node.push(4040, 0, trig.SerializeToString())
    with pytest.raises(TimeoutError):
        node.recv_direct(timeout=1.5)
    assert node.get_result(key) == 1


def test_multiexec_ignores_invalid_results_until_a_valid_one(node):
    node.register("fast", lambda lib: None)
    node.register("slow", lambda lib: (time.sleep(0.3), "V")[1])
    node.register("pick", lambda lib, x: x)
    run_dag(node, "multi", ["fast", "slow", "pick"], [("fast", "pick"), ("slow", "pick")],
            {"fast": 0, "slow": 0, "pick": 1}, multiexec={"pick": [None]})
    assert node.recv_direct() == "V"  # the None from `fast` counted as "no result"
    with pytest.raises(TimeoutError):
        node.recv_direct(timeout=1.0)


def test_error_in_dag_function_reaches_the_caller(node):
    def bad(lib, x):
        raise KeyError("missing thing")

    node.register("bad", bad)
    run_dag(node, "err", ["sq", "bad", "inc"], [("sq", "bad"), ("bad", "inc")],
            {"sq": 0, "bad": 1, "inc": 0}, fixed={"sq": [2]})
    res = node.recv_direct()
    assert is_error(res)
    resp = error_fields(res)
    assert resp.error_type == "builtins.KeyError" and "missing thing" in resp.error_message
    assert "in bad" in resp.traceback and "_executor.py" not in resp.traceback


def test_user_library_get_put(node):
    def store(lib, key, value):
        lib.put(key, value)
        lib.put(key + "-set", {1, 2})
        return lib.get(key), sorted(lib.get(key + "-set")), lib.get("absent-" + key)

    node.register("store", store)
    assert node.run("store", "k1", {"a": [1, 2]}) == ({"a": [1, 2]}, [1, 2], None)
    assert node.get_result("k1") == {"a": [1, 2]}


def test_user_library_send_recv_between_executors_keeps_late_messages(node):
    node.register("whoami", lambda lib: lib.getid())
    assert node.run("whoami", tid=1) == ("127.0.0.1", 1)

    def sender(lib, dest, n):
        for i in range(n):
            lib.send(tuple(dest), f"m{i}".encode())
        return n

    def receiver(lib, want):
        got, deadline = [], time.time() + 20
        while len(got) < want and time.time() < deadline:
            got += lib.recv()
            time.sleep(0.01)
        return got

    node.register("sender", sender)
    node.register("receiver", receiver)
    # messages arrive while no function runs on executor 1: kept for its next recv
    assert node.run("sender", ["127.0.0.1", 1], 3, tid=0) == 3
    time.sleep(0.5)
    got = node.run("receiver", 3, tid=1)
    assert [m for _s, m in got] == [b"m0", b"m1", b"m2"]
    assert all(s == ("127.0.0.1", 0) for s, _m in got)
    assert node.run("receiver", 0, tid=1) == []
