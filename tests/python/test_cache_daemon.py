"""squall-cache end to end: real squall-kvs + squall-cache daemons, executors played
by pyzmq over the daemon's ipc sockets, the cache read from outside with
squall-cache-peek (cache_reader.h, as an executor reads it).

Pins: miss then hit, KEY_DNE, object blobs stored zero-copy and aligned, coalesced
concurrent misses (one KVS fetch), write-through (in the KVS when the PUT is
answered), bad requests refused while serving on, pushed updates (straight to the
update port, and from the KVS after a write by someone else), a write landing before
the key set announcing its key (refetched once announced), key-set reports,
eviction under a small budget, a SIGKILLed reader, restart.
"""
from __future__ import annotations

import importlib
import json
import os
import pickle
import re
import signal
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq

from kvs_harness import AnnaClient, KvsNode, bin_dir, wire

PB = wire()
CB = importlib.import_module("cloudburst_pb2")
SH = importlib.import_module("shared_pb2")


# ---- helpers ---------------------------------------------------------------------

def _align64(n: int) -> int:
    return (n + 63) & ~63


def blob_encode(stream: bytes, buffers: list[bytes], lattice_type: int = 1,
                meta: bytes = b"") -> bytes:
    """A squall object blob (cache/cache_blob.h), written from the format spec."""
    poff = 48 + len(meta) + 16 * len(buffers)
    region = _align64(poff + len(stream))
    table, body, cursor = b"", b"", 0
    for b in buffers:
        off = _align64(cursor)
        body += b"\0" * (off - cursor) + b
        table += struct.pack("<QQ", off, len(b))
        cursor = off + len(b)
    size = region + cursor
    head = struct.pack("<IHHHHIIIQQQ", 0x424F5153, 1, 0, lattice_type, 0, len(meta),
                       len(buffers), 0, len(stream), region, size)
    out = head + meta + table + stream
    return out + b"\0" * (region - len(out)) + body


def object_payload(obj, timestamp: int) -> tuple[bytes, bytes, list[bytes]]:
    """LWW(Value(body=blob(pickle-5 of obj))) as squall writes objects to the KVS."""
    bufs: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    raw = [bytes(b.raw()) for b in bufs]
    value = CB.Value(body=blob_encode(stream, raw), type=0).SerializeToString()
    return PB.LWWValue(timestamp=timestamp, value=value).SerializeToString(), stream, raw


def lww(value: bytes, ts: int) -> bytes:
    return PB.LWWValue(timestamp=ts, value=value).SerializeToString()


def _free_offset() -> int:
    for _ in range(200):
        off = int.from_bytes(os.urandom(2), "little") % 20000 + 1000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 7150 + off))
                return off
            except OSError:
                continue
    raise RuntimeError("no free update port")


class CacheDaemon:
    """One squall-cache process over its own directory."""

    def __init__(self, tmp: Path, kvs: KvsNode, budget: str = "64M",
                 extra: list[str] | None = None):
        self.dir = tmp / "cache"
        self.kvs = kvs
        self.budget = budget
        self.extra = extra or []
        self.offset = _free_offset()
        self.log_path = tmp / f"cache-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def update_endpoint(self) -> str:
        return f"tcp://127.0.0.1:{7150 + self.offset}"

    @property
    def keyset_key(self) -> str:
        return f"ANNA_METADATA|cache_ip|127.0.0.1:{7150 + self.offset}"

    def start(self, timeout: float = 20.0) -> "CacheDaemon":
        cmd = [str(bin_dir() / "squall-cache"), "--dir", str(self.dir), "--kvs",
               self.kvs.routing, "--port-offset", str(self.offset), "--budget",
               self.budget, "--stats-interval", "0", "--kvs-timeout-ms", "3000",
               "--log-file", str(self.log_path), "--log-level", "debug", *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"squall-cache exited {self.proc.returncode}:\n"
                                   + self.log())
            if "serving cache" in self.log():
                return self
            time.sleep(0.05)
        raise TimeoutError("squall-cache did not start:\n" + self.log())

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def counters(self) -> dict[str, int]:
        """SIGHUP makes the daemon log its counters; returns the newest line."""
        before = self.log().count("counters:")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.log().count("counters:") <= before:
            assert time.monotonic() < deadline, "no counters line:\n" + self.log()
            time.sleep(0.02)
        line = [l for l in self.log().splitlines() if "counters:" in l][-1]
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}

    def stop(self, sig=signal.SIGTERM) -> int:
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def peek(self, *keys: str) -> dict[str, dict]:
        out = subprocess.run([str(bin_dir() / "squall-cache-peek"), str(self.dir), "get",
                              *keys], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        rows = [json.loads(l) for l in out.stdout.splitlines()]
        return {r["key"]: r for r in rows}


class Executor:
    """An executor's side of the IPC: PUSH to requests-get/put, PULL for answers."""

    def __init__(self, cache: CacheDaemon, tmp: Path):
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.address = f"ipc://{tmp}/resp-{uuid.uuid4().hex[:8]}"
        self.pull.bind(self.address)
        self.get_sock = self.ctx.socket(zmq.PUSH)
        self.get_sock.connect(f"ipc://{cache.dir}/requests-get")
        self.put_sock = self.ctx.socket(zmq.PUSH)
        self.put_sock.connect(f"ipc://{cache.dir}/requests-put")
        for s in (self.pull, self.get_sock, self.put_sock):
            s.setsockopt(zmq.LINGER, 0)
        self.n = 0

    def close(self):
        for s in (self.pull, self.get_sock, self.put_sock):
            s.close(0)
        self.ctx.term()

    def send_get(self, *keys: str, reply: bool = True) -> str:
        self.n += 1
        rid = f"g{self.n}"
        req = PB.KeyRequest(type=PB.GET, request_id=rid,
                            response_address=self.address if reply else "")
        for k in keys:
            req.tuples.append(PB.KeyTuple(key=k))
        self.get_sock.send(req.SerializeToString())
        return rid

    def send_put(self, key: str, payload: bytes, ltype: int = PB.LWW) -> str:
        self.n += 1
        rid = f"p{self.n}"
        req = PB.KeyRequest(type=PB.PUT, request_id=rid, response_address=self.address)
        req.tuples.append(PB.KeyTuple(key=key, lattice_type=ltype, payload=payload))
        self.put_sock.send(req.SerializeToString())
        return rid

    def recv(self, timeout: float = 15.0):
        assert self.pull.poll(int(timeout * 1000)), "no answer from squall-cache"
        resp = PB.KeyResponse()
        resp.ParseFromString(self.pull.recv())
        return resp

    def get(self, *keys: str):
        rid = self.send_get(*keys)
        resp = self.recv()
        assert resp.response_id == rid
        return resp

    def put(self, key: str, payload: bytes, ltype: int = PB.LWW):
        rid = self.put_sock and self.send_put(key, payload, ltype)
        resp = self.recv()
        assert resp.response_id == rid
        return resp


def wait_for(pred, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def keyset(anna: AnnaClient, cache: CacheDaemon) -> set[str] | None:
    got = anna.get_lww(cache.keyset_key)
    if got is None:
        return None
    s = SH.StringSet()
    s.ParseFromString(got[1])
    return set(s.keys)


# ---- fixtures --------------------------------------------------------------------

@pytest.fixture
def kvs(tmp_path):
    node = KvsNode(tmp_path / "kvs", threads=2).start()
    yield node
    node.stop()


@pytest.fixture
def anna(kvs):
    with AnnaClient(kvs.routing) as c:
        yield c


@pytest.fixture
def cache(tmp_path, kvs):
    d = CacheDaemon(tmp_path, kvs).start()
    yield d
    assert d.stop() == 0, d.log()
    assert "ERROR" not in d.log(), d.log()


@pytest.fixture
def ex(tmp_path, cache):
    e = Executor(cache, tmp_path)
    yield e
    e.close()


# ---- tests -----------------------------------------------------------------------

def test_miss_fetches_from_kvs_then_hits(anna, cache, ex):
    assert anna.put_lww("plain", b"hello", 5).error == PB.NO_ERROR
    assert cache.peek("plain")["plain"]["found"] is False
    resp = ex.get("plain")
    t = resp.tuples[0]
    assert (t.key, t.error, t.lattice_type, t.payload) == ("plain", PB.NO_ERROR, PB.LWW, b"")
    seen = cache.peek("plain")["plain"]
    assert seen["found"] and seen["kind"] == "raw" and seen["lattice_type"] == PB.LWW
    assert bytes.fromhex(seen["pickle"]) == lww(b"hello", 5)
    assert ex.get("plain").tuples[0].error == PB.NO_ERROR
    c = cache.counters()
    assert (c["hits"], c["misses"], c["fetches"]) == (1, 1, 1)


def test_missing_key_answers_key_dne(cache, ex):
    resp = ex.get("nowhere")
    assert resp.tuples[0].error == PB.KEY_DNE
    assert cache.peek("nowhere")["nowhere"]["found"] is False


def test_multi_key_get_answers_once_all_keys_are_done(anna, cache, ex):
    anna.put_lww("m1", b"one", 1)
    anna.put_lww("m2", b"two", 1)
    ex.get("m1")
    resp = ex.get("m1", "m2", "m3")
    errs = {t.key: t.error for t in resp.tuples}
    assert errs == {"m1": PB.NO_ERROR, "m2": PB.NO_ERROR, "m3": PB.KEY_DNE}


def test_object_blob_is_stored_zero_copy_and_aligned(anna, cache, ex):
    arr = np.arange(20000, dtype=np.float64)  # 160 KB: a segment, not inline
    payload, stream, raw = object_payload(arr, 77)
    assert anna.put("arr", PB.LWW, payload).error == PB.NO_ERROR
    assert ex.get("arr").tuples[0].lattice_type == PB.LWW
    seen = cache.peek("arr")["arr"]
    assert seen["kind"] == "object" and seen["timestamp"] == 77
    assert seen["zero_copy"] and seen["aligned"]
    assert bytes.fromhex(seen["pickle"]) == stream
    assert [bytes.fromhex(b) for b in seen["buffers"]] == raw
    back = pickle.loads(stream, buffers=[bytes.fromhex(b) for b in seen["buffers"]])
    assert np.array_equal(back, arr)


def test_concurrent_misses_share_one_kvs_fetch(anna, kvs, cache, ex):
    anna.put_lww("hot", b"x" * 100, 3)
    kvs.proc.send_signal(signal.SIGSTOP)  # hold the fetch in flight
    try:
        rids = [ex.send_get("hot") for _ in range(20)]
        time.sleep(0.3)
    finally:
        kvs.proc.send_signal(signal.SIGCONT)
    answers = [ex.recv() for _ in rids]
    assert sorted(r.response_id for r in answers) == sorted(rids)
    assert all(r.tuples[0].error == PB.NO_ERROR for r in answers)
    c = cache.counters()
    assert c["fetches"] == 1 and c["coalesced"] == 19 and c["misses"] == 20


def test_put_is_in_the_kvs_when_answered_and_merged_into_the_cache(anna, cache, ex):
    anna.put_lww("w", b"old", 10)
    ex.get("w")
    resp = ex.put("w", lww(b"new", 20))
    assert resp.tuples[0].error == PB.NO_ERROR
    assert anna.get_lww("w") == (20, b"new")  # durable before the answer
    assert bytes.fromhex(cache.peek("w")["w"]["pickle"]) == lww(b"new", 20)
    resp = ex.put("w", lww(b"older", 15))  # loses the LWW merge everywhere
    assert resp.tuples[0].error == PB.NO_ERROR
    assert anna.get_lww("w") == (20, b"new")
    assert bytes.fromhex(cache.peek("w")["w"]["pickle"]) == lww(b"new", 20)


def test_write_during_a_pending_miss_is_not_lost(anna, kvs, cache, ex):
    anna.put_lww("race", b"v1", 1)
    kvs.proc.send_signal(signal.SIGSTOP)  # the miss and the write are both in flight
    try:
        gid = ex.send_get("race")
        pid = ex.send_put("race", lww(b"v2", 2))
        time.sleep(0.2)
    finally:
        kvs.proc.send_signal(signal.SIGCONT)
    answers = {r.response_id: r for r in (ex.recv(), ex.recv())}
    assert answers[gid].tuples[0].error == PB.NO_ERROR
    assert answers[pid].tuples[0].error == PB.NO_ERROR
    assert bytes.fromhex(cache.peek("race")["race"]["pickle"]) == lww(b"v2", 2)


def test_put_of_an_object_then_get_reads_it_from_the_cache(anna, cache, ex):
    arr = np.linspace(0, 1, 5000)
    p1, _, _ = object_payload(np.zeros(3), 1)
    anna.put("obj", PB.LWW, p1)
    ex.get("obj")
    p2, stream, raw = object_payload(arr, 2)
    assert ex.put("obj", p2).tuples[0].error == PB.NO_ERROR
    seen = cache.peek("obj")["obj"]
    assert seen["kind"] == "object" and seen["timestamp"] == 2
    back = pickle.loads(bytes.fromhex(seen["pickle"]),
                        buffers=[bytes.fromhex(b) for b in seen["buffers"]])
    assert np.array_equal(back, arr)
    assert anna.get("obj").payload == p2


def test_bad_requests_get_an_error_and_the_daemon_keeps_serving(anna, cache, ex):
    resp = ex.put("bad", b"\xff\xff not an LWWValue")
    assert resp.error == PB.LATTICE and resp.error_message
    resp = ex.put("bad", b"", ltype=PB.NONE)
    assert resp.error == PB.LATTICE and "type" in resp.error_message
    ex.get_sock.send(b"\x0a\xff\xff garbage")
    rid = ex.send_get("")
    resp = ex.recv()
    assert resp.response_id == rid and resp.error == PB.LATTICE
    anna.put_lww("set-typed", b"v", 1)
    ex.get("set-typed")
    resp = ex.put("set-typed", PB.SetValue(values=[b"a"]).SerializeToString(), PB.SET)
    assert resp.error == PB.LATTICE and "LWW" in resp.error_message
    anna.put_lww("after", b"fine", 1)
    assert ex.get("after").tuples[0].error == PB.NO_ERROR
    assert cache.counters()["bad_requests"] >= 4


def test_updates_pushed_to_the_update_port_merge_only_held_keys(anna, cache, ex):
    anna.put_lww("held", b"v1", 1)
    ex.get("held")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(cache.update_endpoint)
    req = PB.KeyRequest(type=PB.PUT)
    req.tuples.append(PB.KeyTuple(key="held", lattice_type=PB.LWW, payload=lww(b"v2", 2)))
    req.tuples.append(PB.KeyTuple(key="not-held", lattice_type=PB.LWW,
                                  payload=lww(b"x", 2)))
    req.tuples.append(PB.KeyTuple(key="held", lattice_type=PB.SET,
                                  payload=PB.SetValue(values=[b"a"]).SerializeToString()))
    push.send(req.SerializeToString())
    push.close()
    wait_for(lambda: bytes.fromhex(cache.peek("held")["held"]["pickle"]) == lww(b"v2", 2),
             what="pushed update merged")
    assert cache.peek("not-held")["not-held"]["found"] is False
    c = cache.counters()
    assert c["updates"] == 1 and c["updates_ignored"] == 2


def test_write_by_another_client_is_pushed_and_visible_to_the_next_read(anna, cache, ex):
    anna.put_lww("fresh", b"v1", 1)
    ex.get("fresh")
    wait_for(lambda: "fresh" in (keyset(anna, cache) or set()), what="key-set report")
    time.sleep(0.3)  # the owning KVS worker learns the key set from the metadata key
    assert anna.put_lww("fresh", b"v2", 2).error == PB.NO_ERROR
    wait_for(lambda: bytes.fromhex(cache.peek("fresh")["fresh"]["pickle"]) == lww(b"v2", 2),
             what="KVS push reaching the cache")
    assert cache.counters()["updates"] >= 1


def test_write_landing_before_the_key_set_announcement_still_reaches_the_cache(
        tmp_path, kvs, anna):
    """The announcement gap: the daemon fetched a key, and a write of it reached the
    KVS before the KVS had a key set listing the key, so nothing is pushed. Once the
    report is acknowledged the daemon reads the key again and sees the write."""
    cache = CacheDaemon(tmp_path, kvs, extra=["--keyset-interval-ms", "1500"]).start()
    ex = Executor(cache, tmp_path)
    try:
        anna.put_lww("first", b"x", 1)
        ex.get("first")
        wait_for(lambda: "first" in (keyset(anna, cache) or set()), what="a key-set report")
        anna.put_lww("gap", b"v1", 1)
        t0 = time.monotonic()
        ex.get("gap")  # reported no sooner than 1.5 s after the first report
        assert anna.put_lww("gap", b"v2", 2).error == PB.NO_ERROR
        assert time.monotonic() - t0 < 1.0, "too slow to land inside the gap"
        assert bytes.fromhex(cache.peek("gap")["gap"]["pickle"]) == lww(b"v1", 1)
        wait_for(lambda: bytes.fromhex(cache.peek("gap")["gap"]["pickle"]) == lww(b"v2", 2),
                 what="refetch after the announcement")
        assert "gap" in keyset(anna, cache)
        c = cache.counters()
        assert c["refetches"] >= 1 and c["updates"] == 0 and c["fetches"] == 2
    finally:
        ex.close()
        assert cache.stop() == 0


def test_key_set_is_reported_to_the_kvs(anna, cache, ex):
    for k in ("ks1", "ks2"):
        anna.put_lww(k, b"v", 1)
        ex.get(k)
    wait_for(lambda: keyset(anna, cache) == {"ks1", "ks2"}, what="key set {ks1, ks2}")


def test_eviction_under_a_small_budget(tmp_path, kvs, anna):
    cache = CacheDaemon(tmp_path, kvs, budget="512K", extra=["--inline-max", "4K"]).start()
    ex = Executor(cache, tmp_path)
    try:
        keys = [f"big{i}" for i in range(12)]
        for k in keys:
            anna.put_lww(k, os.urandom(100 * 1024), 1)
            assert ex.get(k).tuples[0].error == PB.NO_ERROR
        seen = cache.peek(*keys)
        held = [k for k in keys if seen[k]["found"]]
        assert 0 < len(held) < len(keys)
        assert "big11" in held and "big0" not in held  # least recently used went first
        c = cache.counters()
        assert c["evictions"] >= len(keys) - len(held) and c["bytes"] <= 512 * 1024
        wait_for(lambda: keyset(anna, cache) == set(held), what="key set without evicted")
        assert ex.get("big0").tuples[0].error == PB.NO_ERROR  # evicted keys refetch
    finally:
        ex.close()
        assert cache.stop() == 0


def test_hit_reports_keep_values_from_eviction(tmp_path, kvs, anna):
    cache = CacheDaemon(tmp_path, kvs, budget="512K", extra=["--inline-max", "4K"]).start()
    ex = Executor(cache, tmp_path)
    try:
        for i in range(12):
            anna.put_lww(f"v{i}", os.urandom(100 * 1024), 1)
            ex.get(f"v{i}")
            ex.send_get("v0", reply=False)  # an executor hit v0 in LMDB and says so
        seen = cache.peek("v0", "v1")
        assert seen["v0"]["found"] and not seen["v1"]["found"]
        assert cache.counters()["touches"] >= 1
    finally:
        ex.close()
        assert cache.stop() == 0


def test_reader_killed_during_reads_leaves_the_cache_usable(anna, cache, ex):
    anna.put_lww("spun", b"s" * 1000, 1)
    ex.get("spun")
    reader = subprocess.Popen([str(bin_dir() / "squall-cache-peek"), str(cache.dir), "spin",
                               "spun"], stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    reader.kill()
    reader.wait()
    wait_for(lambda: "reader slots of dead processes" in cache.log(), what="slot cleared")
    anna.put_lww("after-kill", b"ok", 1)
    assert ex.get("after-kill").tuples[0].error == PB.NO_ERROR
    assert ex.put("spun", lww(b"t", 2)).tuples[0].error == PB.NO_ERROR
    assert bytes.fromhex(cache.peek("spun")["spun"]["pickle"]) == lww(b"t", 2)


def test_restart_reopens_the_cache_and_refetches_what_changed(tmp_path, kvs, anna):
    cache = CacheDaemon(tmp_path, kvs).start()
    ex = Executor(cache, tmp_path)
    anna.put_lww("kept", b"k1", 1)
    anna.put_lww("changed", b"c1", 1)
    ex.get("kept", "changed")
    ex.close()
    assert cache.stop() == 0
    assert "final counters" in cache.log()
    anna.put_lww("changed", b"c2", 2)  # pushed to nobody: the cache is down
    cache.start()
    ex = Executor(cache, tmp_path)
    try:
        assert cache.peek("kept")["kept"]["found"]
        wait_for(lambda: bytes.fromhex(cache.peek("changed")["changed"]["pickle"])
                 == lww(b"c2", 2), what="refetch after restart")
        resp = ex.get("kept")
        assert resp.tuples[0].error == PB.NO_ERROR
        assert cache.counters()["hits"] == 1
        assert ex.put("kept", lww(b"k2", 2)).tuples[0].error == PB.NO_ERROR
        assert anna.get_lww("kept") == (2, b"k2")
    finally:
        ex.close()
        assert cache.stop() == 0
