"""Test harness for squall-kvs: start real daemons, talk Anna's protocol to them.

The protobuf classes are generated at test time from common/proto/*.proto with
grpc_tools' protoc, independently of squall's C code, so these tests check the wire
format from the outside, as an Anna client would see it.
"""
from __future__ import annotations

import atexit
import importlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parents[2]
_PB_DIR: Path | None = None


def wire():
    """Returns the generated anna_pb2 module (compiled once per process)."""
    global _PB_DIR
    if _PB_DIR is None:
        from grpc_tools import protoc
        _PB_DIR = Path(tempfile.mkdtemp(prefix="squall-pb2-"))
        atexit.register(shutil.rmtree, _PB_DIR, True)
        proto_dir = ROOT / "common" / "proto"
        protos = [str(p) for p in sorted(proto_dir.glob("*.proto"))]
        inc = Path(protoc.__file__).parent / "_proto"
        rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{inc}",
                          f"--python_out={_PB_DIR}", *protos])
        if rc != 0:
            raise RuntimeError("protoc failed on common/proto")
        sys.path.insert(0, str(_PB_DIR))
    return importlib.import_module("anna_pb2")


def bin_dir() -> Path:
    """Where the daemons are: $SQUALL_BIN_DIR, else the build trees, else the package."""
    env = os.environ.get("SQUALL_BIN_DIR")
    candidates = [Path(env)] if env else []
    candidates += [ROOT / "build" / "asan" / "bin", ROOT / "build" / "release" / "bin"]
    for c in candidates:
        if (c / "squall-kvs").exists():
            return c
    try:
        import squall
        pkg = Path(squall.__file__).parent / "bin"
        if (pkg / "squall-kvs").exists():
            return pkg
    except ImportError:
        pass
    raise FileNotFoundError("squall-kvs not built: run `make build-asan` or set SQUALL_BIN_DIR")


def _ports_free(ports) -> bool:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_offset(threads: int) -> int:
    """An offset such that 6200+o..6200+o+threads, 6250+o.. and 6450+o are free."""
    for _ in range(200):
        off = random.randrange(1000, 25000, 10)  # ports stay below the ephemeral range
        ports = [6200 + off + t for t in range(threads)] + [6450 + off]
        ports += [6250 + off + t for t in range(threads)]
        if _ports_free(ports):
            return off
    raise RuntimeError("no free port range found")


class KvsNode:
    """One squall-kvs process with its own data directory and ports."""

    def __init__(self, data_dir: Path, threads: int = 2, durability: str = "fsync",
                 extra: list[str] | None = None):
        self.data_dir = Path(data_dir)
        self.threads = threads
        self.durability = durability
        self.extra = extra or []
        self.offset = free_port_offset(threads)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"kvs-{self.data_dir.name}.log"

    @property
    def routing(self) -> str:
        return f"tcp://127.0.0.1:{6450 + self.offset}"

    def thread_endpoint(self, tid: int) -> str:
        return f"tcp://127.0.0.1:{6200 + self.offset + tid}"

    def command(self) -> list[str]:
        return [str(bin_dir() / "squall-kvs"), "--data-dir", str(self.data_dir),
                "--threads", str(self.threads), "--port-offset", str(self.offset),
                "--durability", self.durability, *self.extra]

    def start(self, timeout: float = 30.0) -> "KvsNode":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        with AnnaClient(self.routing, timeout=0.5) as probe:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"squall-kvs exited with {self.proc.returncode}:\n"
                                       + self.log_text())
                try:
                    probe.addresses(["probe"])
                    return self
                except TimeoutError:
                    continue
        raise TimeoutError("squall-kvs did not answer routing in time:\n" + self.log_text())

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class AnnaClient:
    """A small Anna client over pyzmq, as a third-party program would write it."""

    def __init__(self, routing: str, timeout: float = 10.0):
        self.pb = wire()
        self.ctx = zmq.Context()
        self.routing = routing
        self.timeout = timeout
        self.pull = self.ctx.socket(zmq.PULL)
        port = self.pull.bind_to_random_port("tcp://127.0.0.1")
        self.response_address = f"tcp://127.0.0.1:{port}"
        self.pushes: dict[str, zmq.Socket] = {}
        self.cache: dict[str, list[str]] = {}
        self.counter = 0
        self.client_id = uuid.uuid4().hex[:8]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for s in self.pushes.values():
            s.close(0)
        self.pull.close(0)
        self.ctx.term()

    def _push(self, endpoint: str) -> zmq.Socket:
        s = self.pushes.get(endpoint)
        if s is None:
            s = self.ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            self.pushes[endpoint] = s
        return s

    def next_id(self) -> str:
        self.counter += 1
        return f"{self.client_id}_{self.counter}"

    def send_raw(self, endpoint: str, data: bytes) -> None:
        self._push(endpoint).send(data)

    def recv(self, msg_cls, request_id: str | None = None):
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.pull.poll(int(left * 1000) + 1):
                raise TimeoutError("no response")
            msg = msg_cls()
            msg.ParseFromString(self.pull.recv())
            rid = getattr(msg, "response_id", None)
            if request_id is None or rid == request_id:
                return msg

    def addresses(self, keys: list[str]):
        req = self.pb.KeyAddressRequest(response_address=self.response_address,
                                        keys=keys, request_id=self.next_id())
        self._push(self.routing).send(req.SerializeToString())
        return self.recv(self.pb.KeyAddressResponse, req.request_id)

    def endpoint_for(self, key: str) -> str:
        if key not in self.cache:
            resp = self.addresses([key])
            self.cache[key] = list(resp.addresses[0].ips)
        return self.cache[key][0]

    def request(self, rtype: int, tuples: list, endpoint: str | None = None):
        req = self.pb.KeyRequest(type=rtype, response_address=self.response_address,
                                 request_id=self.next_id())
        for t in tuples:
            req.tuples.append(t)
        endpoint = endpoint or self.endpoint_for(tuples[0].key)
        self._push(endpoint).send(req.SerializeToString())
        return self.recv(self.pb.KeyResponse, req.request_id)

    def put(self, key: str, lattice_type: int, payload: bytes):
        t = self.pb.KeyTuple(key=key, lattice_type=lattice_type, payload=payload)
        return self.request(self.pb.PUT, [t]).tuples[0]

    def get(self, key: str):
        return self.request(self.pb.GET, [self.pb.KeyTuple(key=key)]).tuples[0]

    def put_lww(self, key: str, value: bytes, timestamp: int):
        payload = self.pb.LWWValue(timestamp=timestamp, value=value).SerializeToString()
        return self.put(key, self.pb.LWW, payload)

    def get_lww(self, key: str):
        t = self.get(key)
        if t.error != self.pb.NO_ERROR:
            return None
        v = self.pb.LWWValue()
        v.ParseFromString(t.payload)
        return v.timestamp, v.value
