"""squall-worker end to end: pinning, malformed input, $PYTHONPATH, self-departure and
a clean SIGTERM stop."""
from __future__ import annotations

import os
import time

import pytest
import zmq

from worker_harness import pb, worker_client


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    d = tmp_path_factory.mktemp("worker-life")
    lib = d / "lib"
    lib.mkdir()
    (lib / "squall_test_helper.py").write_text("def triple(x):\n    return 3 * x\n")
    # prepended, not replaced: the executors must still import the squall under test
    path = os.pathsep.join(p for p in (str(lib), os.environ.get("PYTHONPATH")) if p)
    with worker_client(d, env={"PYTHONPATH": path}) as client:
        yield client
    worker = client.w
    # SIGTERM: clean stop of every executor
    assert worker.proc.returncode == 0, worker.log_text()[-3000:]


def test_pythonpath_is_honoured_by_executors(node):
    def use_helper(lib, x):
        import squall_test_helper
        return squall_test_helper.triple(x)

    node.register("use_helper", use_helper)
    assert node.run("use_helper", 5) == 15


def test_malformed_messages_are_dropped_and_executor_keeps_serving(node):
    node.register("echo", lambda lib, x: x)
    for base in (4000, 4020, 4030, 4040):
        node.push(base, 0, b"\xff\xff\xff garbage")
    assert node.run("echo", "still here") == "still here"


def test_pin_answers_the_scheduler_and_reports_the_function(node):
    node.register("pinme", lambda lib: 1)
    ctx = zmq.Context()
    ack = ctx.socket(zmq.PULL)
    ack.bind(f"tcp://127.0.0.1:{5010 + node.w.offset}")
    try:
        internal = pb("internal_pb2")
        node.w.statuses(0.1)
        node.push(4000, 1, internal.PinFunction(name="pinme", response_address="127.0.0.1")
                  .SerializeToString())
        assert ack.poll(30000)
        resp = node.cb.GenericResponse()
        resp.ParseFromString(ack.recv())
        assert resp.success
        deadline, pinned = time.monotonic() + 10, False
        while not pinned and time.monotonic() < deadline:
            pinned = any(st.tid == 1 and "pinme" in st.functions for st in node.w.statuses(1))
        assert pinned
        node.push(4000, 1, internal.PinFunction(name="not-registered",
                                                response_address="127.0.0.1")
                  .SerializeToString())
        assert ack.poll(30000)
        resp.ParseFromString(ack.recv())
        assert not resp.success and "not-registered" in resp.error_message
        node.push(4010, 1, b"pinme")  # unpin
        deadline, unpinned = time.monotonic() + 10, False
        while not unpinned and time.monotonic() < deadline:
            unpinned = any(st.tid == 1 and st.running and "pinme" not in st.functions
                           for st in node.w.statuses(1))
        assert unpinned
    finally:
        ack.close(0)
        ctx.term()


def test_self_depart_reports_not_running_and_is_not_restarted(node):
    node.w.statuses(0.1)
    node.push(4050, 1, b"")
    deadline, down = time.monotonic() + 30, False
    while not down and time.monotonic() < deadline:
        down = any(st.tid == 1 and not st.running for st in node.w.statuses(1.0))
    assert down
    # The process exits after its status went out; under ASan its teardown is slow.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (1 in node.w.executor_pids()
                                           or "exited with code 3" not in node.w.log_text()):
        time.sleep(0.2)
    assert 1 not in node.w.executor_pids()
    assert "exited with code 3" in node.w.log_text()
    time.sleep(1.0)  # and it is not restarted
    assert 1 not in node.w.executor_pids()
    assert node.run("echo", "tid 0 serves", tid=0) == "tid 0 serves"
