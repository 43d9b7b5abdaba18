"""LeakSanitizer over a worker's whole life: the supervisor and executors of a
sanitizer build report no leak whether an executor stops on SIGTERM or departs on its
own, so a departed executor keeps its exit code 3 (LSan would turn it into 1) and
`make test-python` can run every daemon with leak checking on. Skipped for daemons
built without AddressSanitizer."""
from __future__ import annotations

import os
import time

import pytest

from kvs_harness import KvsNode, bin_dir
from worker_harness import ExecClient, WorkerNode

LSAN_ON = {"ASAN_OPTIONS": "halt_on_error=1:detect_leaks=1"}


def sanitizer_build() -> bool:
    return b"__asan_init" in (bin_dir() / "squall-worker").read_bytes()


@pytest.mark.skipif(not sanitizer_build(), reason="daemons built without AddressSanitizer")
def test_worker_stop_and_departure_report_no_leak(tmp_path, monkeypatch):
    for k, v in LSAN_ON.items():
        monkeypatch.setenv(k, v)
    kvs = KvsNode(tmp_path / "kvs", threads=1, durability="none").start()
    worker = WorkerNode(kvs, tmp_path, executors=2,
                        env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    client = None
    try:
        worker.start()
        client = ExecClient(worker)
        client.register("echo", lambda lib, x: x)
        assert client.run("echo", "hello", tid=1) == "hello"
        client.push(4050, 1, b"")  # tid 1 departs on its own
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "exited with code" not in worker.log_text():
            time.sleep(0.2)  # under ASan the departing executor's teardown is slow
    finally:
        if client:
            client.close()
        code = worker.stop()
        kvs_code = kvs.stop()
    log = worker.log_text()
    assert "LeakSanitizer" not in log, log[-6000:]
    assert "LeakSanitizer" not in kvs.log_text(), kvs.log_text()[-6000:]
    assert code == 0 and kvs_code == 0
    assert "executor 1 (pid" in log and "exited with code 3" in log, log[-3000:]
    assert "exited with code 0" in log, log[-3000:]  # tid 0, stopped by SIGTERM
