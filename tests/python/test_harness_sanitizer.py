"""The test harnesses fail a test whose daemon logged an AddressSanitizer or
LeakSanitizer report (worker_harness.WorkerNode.stop, cb_harness.Cluster.stop), and
a node made with crashes_ok=True tolerates only ASan's reports of a fatal signal."""
from __future__ import annotations

import os
import signal
import time

import pytest

from cb_harness import SanitizerReport, check_sanitizer_log, sanitizer_reports
from kvs_harness import KvsNode, bin_dir

LEAK = """2026-01-01T00:00:00Z WARN  worker: executor 1 (pid 7) exited with code 1
=================================================================
==4242==ERROR: LeakSanitizer: detected memory leaks

Direct leak of 12345 byte(s) in 1 object(s) allocated from:
    #0 0x7f in malloc
"""
SEGV = """AddressSanitizer:DEADLYSIGNAL
=================================================================
==4243==ERROR: AddressSanitizer: SEGV on unknown address 0x000000000000 (pc 0x1 T0)
==4243==The signal is caused by a READ memory access.
"""
OVERFLOW = "==4244==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x602 at pc\n"


def test_leaks_and_memory_errors_are_reported_even_when_crashes_are_expected():
    assert sanitizer_reports("INFO  worker: 2 executors running\n") == []
    assert sanitizer_reports(LEAK) == ["ERROR: LeakSanitizer: detected memory leaks"]
    assert sanitizer_reports(LEAK, crashes_ok=True) == [
        "ERROR: LeakSanitizer: detected memory leaks"]
    assert len(sanitizer_reports(OVERFLOW + SEGV)) == 2
    assert sanitizer_reports(OVERFLOW + SEGV, crashes_ok=True) == [
        "ERROR: AddressSanitizer: heap-buffer-overflow on address 0x602 at pc"]


def test_a_crash_report_fails_only_a_node_that_did_not_expect_crashes():
    check_sanitizer_log("squall-worker", SEGV, crashes_ok=True)
    with pytest.raises(SanitizerReport) as e:
        check_sanitizer_log("squall-worker", "boot\n" + SEGV)
    assert "squall-worker logged 1 sanitizer report(s)" in str(e.value)
    assert "SEGV on unknown address" in str(e.value)


def _asan_build() -> bool:
    try:
        return b"__asan_init" in (bin_dir() / "squall-worker").read_bytes()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not _asan_build(), reason="daemons built without AddressSanitizer")
def test_worker_node_stop_fails_when_an_executor_crash_was_not_expected(tmp_path):
    from worker_harness import WorkerNode
    kvs = KvsNode(tmp_path / "kvs", threads=1, durability="none").start()
    node = WorkerNode(kvs, tmp_path, executors=1,
                      env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    try:
        node.start()
        os.kill(node.executor_pids()[0], signal.SIGSEGV)  # ASan reports it, then it dies
        deadline = time.monotonic() + 30
        while "exited with code" not in node.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(SanitizerReport) as e:
            node.stop()
        assert "AddressSanitizer: SEGV" in str(e.value)
        assert not kvs.alive()  # a failing check leaves nothing running
    finally:
        if node.proc and node.proc.poll() is None:  # the test failed before stop()
            node.proc.kill()
            node.proc.wait()
        kvs.stop()
