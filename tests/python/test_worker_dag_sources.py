"""squall-worker end to end: a DAG source starts when its DagSchedule arrives (the
executor makes the BEGIN trigger itself, docs/executor.md), runs once even when the
scheduler's BEGIN trigger follows, and a MULTIEXEC source still waits for a trigger."""
from __future__ import annotations

import time
import uuid

from test_worker_dags import node  # noqa: F401 -- the same worker fixture


def send_schedules(node, functions, links, placement, fixed, multiexec=(), carried=(),
                   send=None):
    """One DagSchedule per function of `send` (default: every one; sources with
    triggers ["BEGIN"]), each listing `carried`, no trigger. Returns the schedule id."""
    cb = node.cb
    dag = cb.Dag(name="d-" + uuid.uuid4().hex[:8])
    for f in functions:
        ref = dag.functions.add(name=f)
        if f in multiexec:
            ref.type = cb.MULTIEXEC
    for s, t in links:
        dag.connections.add(source=s, sink=t)
    sid = str(uuid.uuid4())
    for f in functions if send is None else send:
        sch = cb.DagSchedule(id=sid, target_function=f, start_time=time.time())
        sch.dag.CopyFrom(dag)
        sch.triggers.extend([s for s, t in links if t == f] or ["BEGIN"])
        for g, tid in placement.items():
            sch.locations[g] = f"127.0.0.1:{tid}"
        for g, vals in fixed.items():
            sch.arguments[g].CopyFrom(node.args(vals))
        sch.response_address = node.response_address
        sch.carried.extend(carried)
        node.push(4030, placement[f], sch.SerializeToString())
    return sid


def begin(node, sid, fn, tid):
    trig = node.cb.DagTrigger(id=sid, target_function=fn, source="BEGIN")
    node.push(4040, tid, trig.SerializeToString())


def no_more_results(node, seconds=0.5) -> bool:
    try:
        node.recv_direct(timeout=seconds)
    except TimeoutError:
        return True
    return False


def test_source_starts_from_its_schedule_alone(node):
    node.register("sq", lambda lib, x: x * x)
    node.register("inc", lambda lib, x: x + 1)
    send_schedules(node, ["sq", "inc"], [("sq", "inc")], {"sq": 0, "inc": 1}, {"sq": [6]})
    assert node.recv_direct(timeout=10) == 37


def counting(log):
    """A function returning x + 100 that appends "run" to the file log at each run."""
    def counted(lib, x, path=str(log)):
        with open(path, "a") as f:
            f.write("run\n")
        return x + 100
    return counted


def test_begin_trigger_after_the_schedule_does_not_run_the_source_again(node, tmp_path):
    log = tmp_path / "runs.txt"
    node.register("counted", counting(log))
    sid = send_schedules(node, ["counted"], [], {"counted": 1}, {"counted": [1]})
    begin(node, sid, "counted", 1)
    assert node.recv_direct(timeout=10) == 101
    assert no_more_results(node)
    assert log.read_text() == "run\n"


def test_multiexec_source_waits_for_its_begin_trigger(node):
    node.register("mx", lambda lib, x: x * 3)
    sid = send_schedules(node, ["mx"], [], {"mx": 0}, {"mx": [5]}, multiexec={"mx"})
    assert no_more_results(node)
    begin(node, sid, "mx", 0)
    assert node.recv_direct(timeout=10) == 15
    assert no_more_results(node)


def test_repeated_schedule_of_a_finished_source_is_dropped(node):
    node.register("once", lambda lib, x: x - 1)
    cb = node.cb
    sid = send_schedules(node, ["once"], [], {"once": 0}, {"once": [10]})
    assert node.recv_direct(timeout=10) == 9
    sch = cb.DagSchedule(id=sid, target_function="once", start_time=time.time())
    sch.dag.functions.add(name="once")
    sch.triggers.append("BEGIN")
    sch.locations["once"] = "127.0.0.1:0"
    sch.arguments["once"].CopyFrom(node.args([10]))
    sch.response_address = node.response_address
    node.push(4030, 0, sch.SerializeToString())
    assert no_more_results(node)
