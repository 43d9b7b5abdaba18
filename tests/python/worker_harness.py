"""Test harness for squall-worker: a real KVS and a real worker, driven directly.

``WorkerNode`` starts ``squall-worker`` with E executors on free ports next to a
``KvsNode``; a PULL socket bound at the "scheduler" status port (5007+offset) collects
the ThreadStatus messages executors send. ``ExecClient`` talks to executors exactly as
a scheduler or an upstream executor would: FunctionCall to 4020+offset+tid, DagSchedule
to 4030+offset+tid, DagTrigger to 4040+offset+tid, user messages to 5500+offset+tid,
and registers functions by writing ``funcs/<name>`` into the KVS as a scheduler does.

``WorkerNode.stop`` fails the test (cb_harness.SanitizerReport) when the worker's log
holds an AddressSanitizer or LeakSanitizer report, e.g. an executor that leaked at
SIGTERM (the supervisor only logs its exit code 1). A node whose tests crash executors
on purpose is made with ``crashes_ok=True``: ASan's reports of the fatal signal are
then expected, leaks and memory errors still fail.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cloudpickle
import zmq

import kvs_harness
from cb_harness import check_sanitizer_log
from kvs_harness import AnnaClient, KvsNode, bin_dir

from squall._serialize import decode_value, dump, encode_value, load  # installed package


def pb(name: str = "cloudburst_pb2"):
    kvs_harness.wire()
    import importlib
    return importlib.import_module(name)


def free_worker_offset(executors: int) -> int:
    for _ in range(200):
        off = kvs_harness.random.randrange(1000, 40000, 10)
        ports = [b + off + t for b in (4000, 4010, 4020, 4030, 4040, 4050, 5500)
                 for t in range(executors)] + [5007 + off]
        if kvs_harness._ports_free(ports):
            return off
    raise RuntimeError("no free port range for the worker")


class WorkerNode:
    """One squall-worker process (supervisor + E executors)."""

    def __init__(self, kvs: KvsNode, log_dir: Path, executors: int = 2,
                 extra: list[str] | None = None, env: dict | None = None,
                 crashes_ok: bool = False):
        self.kvs = kvs
        self.crashes_ok = crashes_ok
        self.executors = executors
        self.offset = free_worker_offset(executors)
        self.extra = extra or []
        self.env = env or {}
        self.log_path = Path(log_dir) / f"worker-{self.offset}.log"
        self.proc: subprocess.Popen | None = None
        self.ctx = zmq.Context()
        self.status = self.ctx.socket(zmq.PULL)
        self.status.bind(f"tcp://127.0.0.1:{5007 + self.offset}")

    def start(self, timeout: float = 60.0) -> "WorkerNode":
        cmd = [str(bin_dir() / "squall-worker"), "--executors", str(self.executors),
               "--port-offset", str(self.offset), "--scheduler", "127.0.0.1",
               "--kvs", self.kvs.routing, *self.extra]
        env = dict(os.environ)
        env.update(self.env)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.wait_running(set(range(self.executors)), timeout)
        return self

    def statuses(self, timeout: float):
        """ThreadStatus messages received within timeout seconds."""
        st_cls = pb("internal_pb2").ThreadStatus
        out, deadline = [], time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.status.poll(int(left * 1000) + 1):
                return out
            st = st_cls()
            st.ParseFromString(self.status.recv())
            out.append(st)
            if not self.status.poll(0):
                return out

    def wait_running(self, tids: set, timeout: float = 60.0) -> None:
        deadline, seen = time.monotonic() + timeout, set()
        while seen < tids:
            if self.proc.poll() is not None:
                raise RuntimeError(f"squall-worker exited {self.proc.returncode}:\n"
                                   + self.log_text())
            if time.monotonic() > deadline:
                raise TimeoutError(f"executors {tids - seen} never reported:\n"
                                   + self.log_text())
            for st in self.statuses(0.5):
                if st.running:
                    seen.add(st.tid)

    def executor_pids(self) -> dict:
        """tid -> pid of the executor processes (children of the supervisor)."""
        out = {}
        kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        for pid in kids:
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            for a in args:
                if a.startswith(b"--executor-tid="):
                    out[int(a.split(b"=")[1])] = int(pid)
        return out

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """Stops the worker (SIGTERM, SIGKILL after timeout) and returns its exit code.
        Raises SanitizerReport when its log holds a sanitizer report (see above),
        after stopping the node's KVS too (a second kvs.stop() is harmless)."""
        try:
            if self.proc and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    raise
        finally:
            self.status.close(0)
            self.ctx.term()
        if self.proc:
            try:
                check_sanitizer_log("squall-worker", self.log_text(), self.crashes_ok)
            except AssertionError:
                self.kvs.stop()  # callers stop it after us: nothing outlives the failure
                raise
        return self.proc.returncode if self.proc else 0


@contextlib.contextmanager
def worker_client(log_dir: Path, executors: int = 2, extra: list[str] | None = None,
                  env: dict | None = None, crashes_ok: bool = False, timeout: float = 30.0):
    """A one-thread KVS (no durability), a WorkerNode on it and an ExecClient driving it;
    yields the client and stops all three on exit (the worker's exit code is then
    client.w.proc.returncode)."""
    kvs = KvsNode(Path(log_dir) / "kvs", threads=1, durability="none").start()
    worker = client = None
    try:
        worker = WorkerNode(kvs, log_dir, executors=executors, extra=extra, env=env,
                            crashes_ok=crashes_ok)
        worker.start()
        client = ExecClient(worker, timeout=timeout)
        yield client
    finally:
        if client:
            client.close()
        if worker:
            worker.stop()
        kvs.stop()


class ExecClient:
    """Drives executors directly; results come back through the KVS or a PULL socket."""

    def __init__(self, worker: WorkerNode, timeout: float = 30.0):
        self.w = worker
        self.cb = pb()
        self.anna = AnnaClient(worker.kvs.routing, timeout=timeout)
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        port = self.pull.bind_to_random_port("tcp://127.0.0.1")
        self.response_address = f"tcp://127.0.0.1:{port}"
        self.pushes: dict = {}
        self.timeout = timeout

    def close(self) -> None:
        for s in self.pushes.values():
            s.close(0)
        self.pull.close(0)
        self.ctx.term()
        self.anna.close()

    def push(self, base: int, tid: int, data: bytes) -> None:
        ep = f"tcp://127.0.0.1:{base + self.w.offset + tid}"
        if ep not in self.pushes:
            s = self.ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(ep)
            self.pushes[ep] = s
        self.pushes[ep].send(data)

    # -- KVS -----------------------------------------------------------------------------
    def put_value(self, key: str, value) -> None:
        self.anna.put_lww(key, encode_value(*dump(value)), time.time_ns() // 1000)

    def register(self, name: str, fn) -> None:
        mod = sys.modules.get(getattr(fn, "__module__", None) or "")
        if mod is not None and mod.__name__ != "__main__":
            cloudpickle.register_pickle_by_value(mod)
        self.put_value("funcs/" + name, fn)

    def get_result(self, key: str, timeout: float | None = None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            got = self.anna.get_lww(key)
            if got is not None:
                return load(*decode_value(got[1]))
            time.sleep(0.02)
        raise TimeoutError(f"no result at {key}:\n" + self.w.log_text()[-4000:])

    # -- calls ---------------------------------------------------------------------------
    def args(self, values):
        a = self.cb.Arguments()
        for v in values:
            kind, body = dump(v)
            a.values.add(body=body, type=kind)
        return a

    def call(self, name: str, *values, tid: int = 0, timeout_ms: int = 0) -> str:
        key = "res-" + uuid.uuid4().hex
        fc = self.cb.FunctionCall(name=name, response_key=key, timeout_ms=timeout_ms)
        fc.arguments.CopyFrom(self.args(values))
        self.push(4020, tid, fc.SerializeToString())
        return key

    def run(self, name: str, *values, tid: int = 0, timeout: float | None = None, **kw):
        return self.get_result(self.call(name, *values, tid=tid, **kw), timeout)

    def recv_direct(self, timeout: float | None = None):
        if not self.pull.poll(int((timeout or self.timeout) * 1000)):
            raise TimeoutError("no direct response:\n" + self.w.log_text()[-4000:])
        v = self.cb.Value()
        v.ParseFromString(self.pull.recv())
        return load(v.type, v.body)


def is_error(result) -> bool:
    return isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], str) \
        and result[0].startswith("ERROR")


def error_fields(result):
    """(GenericResponse) of an error tuple."""
    resp = pb().GenericResponse()
    resp.ParseFromString(result[1])
    return resp
