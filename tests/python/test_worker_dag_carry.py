"""squall-worker end to end: carried schedules (SQUALL_FEATURE_CARRY_SCHEDULE,
docs/executor.md). A function listed in DagSchedule.carried gets no schedule from the
scheduler: its first predecessor's executor builds it from its own schedule and sends
it inside the DagTrigger, down a whole chain; a fan-in sink waits for every trigger,
and a schedule that arrives both ways runs the function once."""
from __future__ import annotations

from test_worker_dag_sources import counting, no_more_results, send_schedules as run
from test_worker_dags import node  # noqa: F401 -- the same worker fixture


def test_chain_runs_from_its_source_schedule_alone(node):
    node.register("c_sq", lambda lib, x: x * x)
    node.register("c_inc", lambda lib, x: x + 1)
    node.register("c_dbl", lambda lib, x: x * 2)
    fns = ["c_sq", "c_inc", "c_dbl"]
    links = [("c_sq", "c_inc"), ("c_inc", "c_dbl")]
    run(node, fns, links, {"c_sq": 0, "c_inc": 1, "c_dbl": 0}, {"c_sq": [5]},
        carried=["c_inc", "c_dbl"], send=["c_sq"])
    assert node.recv_direct(timeout=10) == 52
    assert no_more_results(node)


def test_fan_in_sink_carried_by_its_first_predecessor_waits_for_both(node):
    node.register("f_a", lambda lib, x: x + 1)
    node.register("f_b", lambda lib, x: x * 10)
    node.register("f_join", lambda lib, a, b: (a, b))
    fns = ["f_a", "f_b", "f_join"]
    links = [("f_a", "f_join"), ("f_b", "f_join")]
    run(node, fns, links, {"f_a": 0, "f_b": 1, "f_join": 1}, {"f_a": [1], "f_b": [2]},
        carried=["f_join"], send=["f_a", "f_b"])
    assert node.recv_direct(timeout=10) == (2, 20)  # connection order
    assert no_more_results(node)


def test_schedule_sent_and_carried_runs_the_function_once(node, tmp_path):
    log = tmp_path / "runs.txt"
    node.register("o_src", lambda lib, x: x * 3)
    node.register("o_counted", counting(log))
    fns = ["o_src", "o_counted"]
    links = [("o_src", "o_counted")]
    run(node, fns, links, {"o_src": 0, "o_counted": 1}, {"o_src": [2]},
        carried=["o_counted"], send=["o_counted", "o_src"])
    assert node.recv_direct(timeout=10) == 106
    assert no_more_results(node)
    assert log.read_text() == "run\n"
