"""squall-worker end to end: timeouts, killed and crashing executors. The caller gets
a clear error, the supervisor restarts the executor, and the node keeps serving."""
from __future__ import annotations

import os
import signal
import time

import pytest

from worker_harness import error_fields, is_error, worker_client


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    d = tmp_path_factory.mktemp("worker-fail")
    # crashes_ok: test_segfault_in_user_code_reports_signal makes ASan report a SEGV
    with worker_client(d, extra=["--call-timeout", "60"], crashes_ok=True,
                       timeout=60) as client:
        client.register("square", lambda lib, x: x * x)
        yield client


def wait_restarted(node, tid, old_pid, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = node.w.executor_pids().get(tid)
        if pid and pid != old_pid:
            node.w.wait_running({tid}, timeout)
            return pid
        time.sleep(0.1)
    raise TimeoutError(node.w.log_text()[-4000:])


def test_call_past_its_timeout_gets_timeout_error_and_executor_is_replaced(node):
    node.register("hang", lambda lib: time.sleep(3600))
    old = node.w.executor_pids()[0]
    res = node.run("hang", tid=0, timeout_ms=500)
    assert is_error(res)
    resp = error_fields(res)
    assert resp.error_type == "squall.TimeoutError"
    assert "hang" in resp.error_message and "0.500 s" in resp.error_message
    assert resp.executor == "127.0.0.1:0"
    wait_restarted(node, 0, old)
    assert node.run("square", 9, tid=0) == 81


def test_kill_9_mid_call_reports_crash_then_retry_succeeds(node):
    node.register("slow", lambda lib, x: (time.sleep(2), x)[1])
    old = node.w.executor_pids()[1]
    key = node.call("slow", 5, tid=1)
    time.sleep(0.5)  # the call is running
    os.kill(old, signal.SIGKILL)
    res = node.get_result(key)
    assert is_error(res)
    resp = error_fields(res)
    assert resp.error_type == "squall.ExecutorCrashed"
    assert "signal 9" in resp.error_message and "slow" in resp.error_message
    wait_restarted(node, 1, old)
    assert node.run("slow", 6, tid=1) == 6  # the retry runs on the restarted executor


def test_os_exit_in_user_code_reports_exit_code(node):
    node.register("quit", lambda lib: os._exit(7))
    old = node.w.executor_pids()[0]
    res = node.run("quit", tid=0)
    assert is_error(res)
    resp = error_fields(res)
    assert resp.error_type == "squall.ExecutorCrashed" and "exited with code 7" in resp.error_message
    wait_restarted(node, 0, old)
    assert node.run("square", 3, tid=0) == 9


def test_dead_executor_is_reported_not_running_to_schedulers(node):
    node.w.statuses(0.1)  # drain
    old = node.w.executor_pids()[1]
    os.kill(old, signal.SIGKILL)
    deadline, down = time.monotonic() + 30, False
    while not down and time.monotonic() < deadline:
        down = any(st.tid == 1 and not st.running for st in node.w.statuses(1.0))
    assert down
    wait_restarted(node, 1, old)
    assert node.run("square", 2, tid=1) == 4


def test_segfault_in_user_code_reports_signal(node):
    import ctypes  # noqa: F401 -- used remotely

    def crash(lib):
        import ctypes
        ctypes.string_at(0)

    node.register("crash", crash)
    old = node.w.executor_pids()[0]
    res = node.run("crash", tid=0)
    assert is_error(res)
    resp = error_fields(res)
    assert resp.error_type == "squall.ExecutorCrashed"
    assert "signal" in resp.error_message or "exited with code" in resp.error_message
    wait_restarted(node, 0, old)
    assert node.run("square", 5, tid=0) == 25


def test_crash_inside_a_dag_reaches_the_direct_response_address(node):
    cb = node.cb
    node.register("die", lambda lib, x: os._exit(9))
    dag = cb.Dag(name="crashing")
    dag.functions.add(name="die")
    sch = cb.DagSchedule(id="crash-" + str(time.time()), target_function="die",
                         response_address=node.response_address)
    sch.dag.CopyFrom(dag)
    sch.triggers.append("BEGIN")
    sch.locations["die"] = "127.0.0.1:1"
    sch.arguments["die"].CopyFrom(node.args([1]))
    old = node.w.executor_pids()[1]
    node.push(4030, 1, sch.SerializeToString())
    node.push(4040, 1, cb.DagTrigger(id=sch.id, target_function="die", source="BEGIN")
              .SerializeToString())
    res = node.recv_direct()
    assert is_error(res)
    resp = error_fields(res)
    assert resp.error_type == "squall.ExecutorCrashed" and "exited with code 9" in resp.error_message
    wait_restarted(node, 1, old)
    assert node.run("square", 11, tid=1) == 121
