"""Cloudburst-protocol test harness: a small client, fake executors, real daemons.

* `CloudburstClient` speaks the scheduler's REQ/REP protocol (PROTOCOL.md §1.11) the
  way Cloudburst's client does (register, call, register_dag, call_dag with direct
  response, delete_dag, list), with timeouts on every socket.
* `FakeExecutor` is an executor thread written in Python: it binds the executor PULL
  ports (4000/4010/4020/4030/4040 + offset + tid), records every message it receives,
  acknowledges pins to the scheduler's 5010 and sends ThreadStatus to 5007 every
  `status_period` seconds (or not at all, to play a dead executor).
* `Scheduler` starts a real squall-scheduler; `Cluster` starts squall-kvs + the
  scheduler (+ squall-worker when asked and built) on free ports and stops them.
* `check_sanitizer_log` fails a test whose daemon logged an AddressSanitizer or
  LeakSanitizer report (`make test-python` runs every daemon with leak checking on,
  and an executor that leaks at SIGTERM only shows in the supervisor's log). Tests
  that crash executors on purpose pass `crashes_ok=True`: ASan's reports of a fatal
  signal (SEGV, BUS, ...) are then expected, every other report still fails.

The protobuf classes come from kvs_harness.wire() (generated from common/proto with
grpc_tools, independent of the C code).
"""
from __future__ import annotations

import importlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import zmq

from kvs_harness import AnnaClient, KvsNode, _ports_free, bin_dir, wire

wire()
cb = importlib.import_module("cloudburst_pb2")
internal = importlib.import_module("internal_pb2")
shared = importlib.import_module("shared_pb2")

SCHED_PORTS = range(5000, 5012)
EXEC_BASES = (4000, 4010, 4020, 4030, 4040, 4050, 5500)


def free_sched_offset(threads: int = 4) -> int:
    """An offset with the scheduler's ports and `threads` executors' ports free."""
    for _ in range(200):
        off = random.randrange(100, 9000, 20)
        ports = [p + off for p in SCHED_PORTS]
        ports += [b + off + t for b in EXEC_BASES for t in range(threads)]
        if _ports_free(ports):
            return off
    raise RuntimeError("no free port range found")


# ---- sanitizer reports in daemon logs ---------------------------------------------

_SANITIZER_REPORT = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)\b[^\n]*")
_CRASH_KINDS = ("SEGV", "BUS", "FPE", "ILL", "ABRT", "deadly signal", "stack-overflow")


class SanitizerReport(AssertionError):
    """A daemon's log holds an AddressSanitizer / LeakSanitizer report."""


def sanitizer_reports(text: str, crashes_ok: bool = False) -> list[str]:
    """The headline of every ASan / LSan report in a log. With crashes_ok, ASan's
    reports of a fatal signal (a crash the test caused on purpose) are left out."""
    out = []
    for m in _SANITIZER_REPORT.finditer(text):
        line = m.group(0)
        if crashes_ok and m.group(1) == "AddressSanitizer" and \
                any(k in line for k in _CRASH_KINDS):
            continue
        out.append(line)
    return out


def check_sanitizer_log(what: str, text: str, crashes_ok: bool = False) -> None:
    """Raises SanitizerReport (with the log from the first report on) when the log
    `text` of daemon `what` holds a report sanitizer_reports counts."""
    reports = sanitizer_reports(text, crashes_ok)
    if reports:
        start = text.find(reports[0])
        raise SanitizerReport(f"{what} logged {len(reports)} sanitizer report(s): "
                              f"{reports[0]}\n" + text[max(0, start - 200):start + 6000])


# ---- values (PROTOCOL.md §3.2) ------------------------------------------------------

def dump(x) -> "cb.Value":
    """bytes -> DEFAULT raw, str -> STRING, anything else -> DEFAULT cloudpickle."""
    import cloudpickle
    if isinstance(x, bytes):
        return cb.Value(body=x, type=cb.DEFAULT)
    if isinstance(x, str):
        return cb.Value(body=x.encode(), type=cb.STRING)
    return cb.Value(body=cloudpickle.dumps(x), type=cb.DEFAULT)


def load(v: "cb.Value"):
    import cloudpickle
    if v.type == cb.STRING:
        return v.body.decode()
    try:
        return cloudpickle.loads(v.body)
    except Exception:
        return v.body


def reference_class():
    """The CloudburstReference class under its wire name (module registered in
    sys.modules if the Python package does not provide it yet)."""
    import sys
    import types
    try:
        return importlib.import_module("cloudburst.shared.reference").CloudburstReference
    except ImportError:
        pass
    for n in ("cloudburst", "cloudburst.shared", "cloudburst.shared.reference"):
        sys.modules.setdefault(n, types.ModuleType(n))
    mod = sys.modules["cloudburst.shared.reference"]

    class CloudburstReference:
        def __init__(self, key, deserialize=False):
            self.key = key
            self.deserialize = deserialize
    CloudburstReference.__module__ = mod.__name__
    CloudburstReference.__qualname__ = "CloudburstReference"
    mod.CloudburstReference = CloudburstReference
    return CloudburstReference


# ---- the client -------------------------------------------------------------------

class SchedulerError(Exception):
    def __init__(self, resp):
        super().__init__(f"{cb.CloudburstError.Name(resp.error)}: {resp.error_message}")
        self.resp = resp
        self.error = resp.error
        self.message = resp.error_message


class CloudburstClient:
    """A Cloudburst-protocol client of one scheduler (REQ sockets with timeouts)."""

    def __init__(self, host: str = "127.0.0.1", offset: int = 0, timeout: float = 15.0):
        self.host, self.offset, self.timeout = host, offset, timeout
        self.ctx = zmq.Context()
        self.reqs: dict[int, zmq.Socket] = {}
        self.pull = self.ctx.socket(zmq.PULL)
        port = self.pull.bind_to_random_port("tcp://127.0.0.1")
        self.response_address = f"tcp://127.0.0.1:{port}"

    def close(self):
        for s in self.reqs.values():
            s.close(0)
        self.pull.close(0)
        self.ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _req(self, port: int) -> zmq.Socket:
        s = self.reqs.get(port)
        if s is None:
            s = self.ctx.socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVTIMEO, int(self.timeout * 1000))
            s.setsockopt(zmq.SNDTIMEO, int(self.timeout * 1000))
            s.setsockopt(zmq.REQ_RELAXED, 1)
            s.setsockopt(zmq.REQ_CORRELATE, 1)
            s.connect(f"tcp://{self.host}:{port + self.offset}")
            self.reqs[port] = s
        return s

    def raw(self, port: int, data: bytes) -> bytes:
        s = self._req(port)
        s.send(data)
        try:
            return s.recv()
        except zmq.Again:
            raise TimeoutError(f"scheduler port {port} did not reply") from None

    def _generic(self, port: int, data: bytes, check: bool = True):
        r = cb.GenericResponse()
        r.ParseFromString(self.raw(port, data))
        if check and not r.success:
            raise SchedulerError(r)
        return r

    def connect(self) -> str:
        return self.raw(5000, b"").decode()

    def register(self, fn, name: str, check: bool = True):
        if callable(fn):
            # test modules are not importable on executors: ship the code by value
            import sys
            import cloudpickle
            mod = sys.modules.get(getattr(fn, "__module__", ""))
            if mod is not None and mod.__name__ != "__main__":
                cloudpickle.register_pickle_by_value(mod)
        body = fn if isinstance(fn, bytes) else dump(fn).SerializeToString()
        return self._generic(5001, cb.Function(name=name, body=body).SerializeToString(), check)

    def call(self, name: str, args=(), response_key: str = "", check: bool = True):
        fc = cb.FunctionCall(name=name, response_key=response_key)
        fc.arguments.values.extend(dump(a) for a in args)
        return self._generic(5002, fc.SerializeToString(), check)

    def list(self, prefix: str = "") -> list[str]:
        s = shared.StringSet()
        s.ParseFromString(self.raw(5003, prefix.encode()))
        return sorted(s.keys)

    def register_dag(self, name: str, functions, connections, colocated=(), check=True,
                     types=None):
        d = cb.Dag(name=name, colocated=list(colocated))
        for f in functions:
            d.functions.add(name=f, type=(types or {}).get(f, cb.REGULAR))
        for a, b in connections:
            d.connections.add(source=a, sink=b)
        return self._generic(5004, d.SerializeToString(), check)

    def call_dag(self, name: str, function_args=None, direct: bool = False,
                 output_key: str = "", check: bool = True):
        c = cb.DagCall(name=name, output_key=output_key)
        for fn, args in (function_args or {}).items():
            c.function_args[fn].values.extend(dump(a) for a in args)
        if direct:
            c.response_address = self.response_address
        return self._generic(5005, c.SerializeToString(), check)

    def direct_result(self, timeout: float = 10.0):
        if not self.pull.poll(int(timeout * 1000)):
            raise TimeoutError("no direct response")
        v = cb.Value()
        v.ParseFromString(self.pull.recv())
        return load(v)

    def delete_dag(self, name: str, check: bool = True):
        return self._generic(5006, name.encode(), check)


# ---- fake executors -----------------------------------------------------------------

class FakeExecutor:
    """A Python stand-in for one executor thread (records, acks pins, sends status)."""

    def __init__(self, offset: int, tid: int, ip: str = "127.0.0.1",
                 status_period: float | None = 0.2, ack_pins: bool = True,
                 anonymous_acks: bool = False, features: int = 0, ack_delay: float = 0.0):
        self.offset, self.tid, self.ip = offset, tid, ip
        self.ack_delay = ack_delay  # seconds between a pin and its acknowledgement
        self._delayed: list = []  # (due, socket, ack bytes)
        self.features = features  # ThreadStatus.squall_features (0: a Cloudburst executor)
        self.status_period = status_period
        self.ack_pins = ack_pins
        self.anonymous_acks = anonymous_acks  # Cloudburst's acks name nothing
        self.pinned: list[str] = []
        self.received: dict[str, list] = {"pin": [], "unpin": [], "call": [], "schedule": [],
                                          "trigger": []}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._silent = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def id(self) -> str:
        return f"{self.ip}:{self.tid}"

    def start(self) -> "FakeExecutor":
        self._ready = threading.Event()
        self.thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("fake executor did not bind")
        return self

    def silence(self):
        """Stops sending status (plays an executor that hung or vanished)."""
        self._silent.set()

    def depart(self):
        """Sends running=false once and goes silent."""
        self._silent.set()
        self._depart = True

    def stop(self):
        self._stop.set()
        self.thread.join(5)

    def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received[kind]) >= count:
                    return list(self.received[kind])
            time.sleep(0.02)
        with self.lock:
            return list(self.received[kind])

    def _status(self, running=True):
        st = internal.ThreadStatus(ip=self.ip, tid=self.tid, running=running,
                                   functions=[] if not running else list(self.pinned),
                                   squall_features=self.features)
        return st.SerializeToString()

    def _run(self):
        ctx = zmq.Context()
        socks = {}
        poller = zmq.Poller()
        for base in (4000, 4010, 4020, 4030, 4040):
            s = ctx.socket(zmq.PULL)
            s.setsockopt(zmq.LINGER, 0)
            s.bind(f"tcp://{self.ip}:{base + self.offset + self.tid}")
            socks[s] = base
            poller.register(s, zmq.POLLIN)
        status = ctx.socket(zmq.PUSH)
        status.setsockopt(zmq.LINGER, 0)
        status.connect(f"tcp://127.0.0.1:{5007 + self.offset}")
        acks = {}
        self._depart = False
        self._ready.set()
        next_status = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self._depart:
                    status.send(self._status(running=False))
                    self._depart = False
                if (self.status_period is not None and not self._silent.is_set()
                        and now >= next_status):
                    status.send(self._status())
                    next_status = now + self.status_period
                for s, _ in poller.poll(20):
                    data = s.recv()
                    self._handle(socks[s], data, ctx, acks, status)
                while self._delayed and self._delayed[0][0] <= time.monotonic():
                    _, sock, ack = self._delayed.pop(0)
                    sock.send(ack)
                    status.send(self._status())
        finally:
            for s in list(socks) + [status] + list(acks.values()):
                s.close(0)
            ctx.term()

    def _handle(self, base, data, ctx, acks, status):
        if base == 4000:
            pf = internal.PinFunction()
            pf.ParseFromString(data)
            with self.lock:
                self.received["pin"].append(pf)
            if not self.ack_pins:
                return
            ep = f"tcp://{pf.response_address}:{5010 + self.offset}"
            if ep not in acks:
                acks[ep] = ctx.socket(zmq.PUSH)
                acks[ep].setsockopt(zmq.LINGER, 0)
                acks[ep].connect(ep)
            if pf.name not in self.pinned:
                self.pinned.append(pf.name)
            ack = cb.GenericResponse(success=True)
            if not self.anonymous_acks:  # squall executors name function and executor
                ack.response_id, ack.executor = pf.name, self.id
            if self.ack_delay:
                self._delayed.append((time.monotonic() + self.ack_delay, acks[ep],
                                      ack.SerializeToString()))
                return
            acks[ep].send(ack.SerializeToString())
            status.send(self._status())
            return
        if base == 4010:
            name = data.decode()
            with self.lock:
                self.received["unpin"].append(name)
            if name in self.pinned:
                self.pinned.remove(name)
            if not self._silent.is_set():
                status.send(self._status())
            return
        cls = {4020: cb.FunctionCall, 4030: cb.DagSchedule, 4040: cb.DagTrigger}[base]
        kind = {4020: "call", 4030: "schedule", 4040: "trigger"}[base]
        msg = cls()
        msg.ParseFromString(data)
        with self.lock:
            self.received[kind].append(msg)


# ---- daemons ------------------------------------------------------------------------

class Scheduler:
    """One squall-scheduler process."""

    def __init__(self, log_dir: Path, kvs_routing: str, offset: int, extra=None,
                 host: str = "127.0.0.1"):
        self.kvs_routing, self.offset, self.host = kvs_routing, offset, host
        self.extra = list(extra or [])
        self.log_path = Path(log_dir) / f"scheduler-{host}-{offset}.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [str(bin_dir() / "squall-scheduler"), "--port-offset", str(self.offset),
                "--kvs", self.kvs_routing, "--log-level", "debug", *self.extra]

    def start(self, timeout: float = 20.0) -> "Scheduler":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        with CloudburstClient(host=self.host, offset=self.offset, timeout=0.5) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"squall-scheduler exited with {self.proc.returncode}:\n"
                                       + self.log_text())
                try:
                    c.connect()
                    return self
                except (TimeoutError, zmq.ZMQError):
                    c.reqs.pop(5000).close(0)
        raise TimeoutError("squall-scheduler did not answer in time:\n" + self.log_text())

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def worker_binary() -> Path | None:
    p = bin_dir() / "squall-worker"
    return p if p.exists() else None


class Cluster:
    """squall-kvs + squall-scheduler (+ squall-worker with `worker=True`), all on
    free ports with one port offset for the scheduler and its executors."""

    def __init__(self, tmp: Path, worker: bool = False, executors: int = 1,
                 sched_extra=None, crashes_ok: bool = False):
        self.tmp = Path(tmp)
        self.kvs = KvsNode(self.tmp / "kvs", threads=1, durability="none")
        self.offset = free_sched_offset()
        self.sched: Scheduler | None = None
        self.worker_proc: subprocess.Popen | None = None
        self.want_worker, self.executors = worker, executors
        self.sched_extra = sched_extra or []
        self.fakes: list[FakeExecutor] = []
        self.crashes_ok = crashes_ok  # executors crash on purpose (check_sanitizer_log)

    def start(self) -> "Cluster":
        self.kvs.start()
        self.sched = Scheduler(self.tmp, self.kvs.routing, self.offset,
                               self.sched_extra).start()
        if self.want_worker:
            self._start_worker()
        return self

    def _start_worker(self):
        exe = worker_binary()
        if exe is None:
            raise FileNotFoundError("squall-worker is not built")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0")  # embedded CPython
        # executors use this interpreter's site-packages (the installed squall package,
        # cloudpickle); PYTHONPATH, when set, is honoured by the executors too
        log = open(self.tmp / "worker.log", "ab")
        self.worker_proc = subprocess.Popen(
            [str(exe), "--port-offset", str(self.offset), "--kvs", self.kvs.routing,
             "--scheduler", "127.0.0.1", "--executors", str(self.executors),
             "--python", sys.executable],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def fake(self, tid: int, **kw) -> FakeExecutor:
        f = FakeExecutor(self.offset, tid, **kw).start()
        self.fakes.append(f)
        return f

    def client(self, timeout: float = 15.0) -> CloudburstClient:
        return CloudburstClient(offset=self.offset, timeout=timeout)

    def anna(self) -> AnnaClient:
        return AnnaClient(self.kvs.routing)

    def stop(self):
        for f in self.fakes:
            f.stop()
        if self.worker_proc and self.worker_proc.poll() is None:
            self.worker_proc.send_signal(signal.SIGTERM)
            try:
                self.worker_proc.wait(20)
            except subprocess.TimeoutExpired:
                self.worker_proc.kill()
                self.worker_proc.wait()
        rc = self.sched.stop() if self.sched else 0
        self.kvs.stop()
        if rc != 0:  # sanitizer reports (leaks at exit) make the exit code non-zero
            raise RuntimeError(f"squall-scheduler exited with {rc}:\n"
                               + self.sched.log_text()[-4000:])
        if self.sched:
            check_sanitizer_log("squall-scheduler", self.sched.log_text())
        if self.worker_proc:
            check_sanitizer_log("squall-worker", self.worker_log_text(), self.crashes_ok)

    def worker_log_text(self) -> str:
        try:
            return (self.tmp / "worker.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
