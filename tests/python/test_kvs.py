"""End-to-end tests of squall-kvs against real daemons, through Anna's wire protocol."""
from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import zmq

import importlib

from kvs_harness import AnnaClient, KvsNode, wire

pb = wire()
shared = importlib.import_module("shared_pb2")


@pytest.fixture
def node(tmp_path):
    n = KvsNode(tmp_path / "data", threads=2).start()
    yield n
    n.stop()


@pytest.fixture
def client(node):
    with AnnaClient(node.routing) as c:
        yield c


def lww(ts: int, value: bytes) -> bytes:
    return pb.LWWValue(timestamp=ts, value=value).SerializeToString()


def set_payload(*items: bytes) -> bytes:
    return pb.SetValue(values=list(items)).SerializeToString()


def decode(cls, payload: bytes):
    msg = cls()
    msg.ParseFromString(payload)
    return msg


# ---- every lattice type ------------------------------------------------------------

def test_lww_round_trips(client):
    assert client.put("k-lww", pb.LWW, lww(7, b"hello")).error == pb.NO_ERROR
    t = client.get("k-lww")
    assert t.error == pb.NO_ERROR and t.lattice_type == pb.LWW
    v = decode(pb.LWWValue, t.payload)
    assert (v.timestamp, v.value) == (7, b"hello")


def test_set_and_ordered_set_round_trip_sorted(client):
    for ltype, key in ((pb.SET, "k-set"), (pb.ORDERED_SET, "k-oset")):
        assert client.put(key, ltype, set_payload(b"b", b"a", b"c", b"a")).error == pb.NO_ERROR
        t = client.get(key)
        assert t.lattice_type == ltype
        assert list(decode(pb.SetValue, t.payload).values) == [b"a", b"b", b"c"]


def test_priority_round_trips_and_keeps_lowest(client):
    for prio, value in ((5.0, b"five"), (2.5, b"two"), (9.0, b"nine")):
        payload = pb.PriorityValue(priority=prio, value=value).SerializeToString()
        assert client.put("k-prio", pb.PRIORITY, payload).error == pb.NO_ERROR
    v = decode(pb.PriorityValue, client.get("k-prio").payload)
    assert (v.priority, v.value) == (2.5, b"two")


def test_single_causal_keeps_concurrent_siblings_and_drops_dominated(client):
    def put(clock, value):
        p = pb.SingleKeyCausalValue(vector_clock=clock, values=[value]).SerializeToString()
        assert client.put("k-causal", pb.SINGLE_CAUSAL, p).error == pb.NO_ERROR

    put({"a": 1}, b"x")
    put({"b": 1}, b"y")          # concurrent with x: both kept
    v = decode(pb.SingleKeyCausalValue, client.get("k-causal").payload)
    assert dict(v.vector_clock) == {"a": 1, "b": 1}
    assert sorted(v.values) == [b"x", b"y"]
    put({"a": 2, "b": 1}, b"z")  # saw both: replaces them
    v = decode(pb.SingleKeyCausalValue, client.get("k-causal").payload)
    assert dict(v.vector_clock) == {"a": 2, "b": 1}
    assert list(v.values) == [b"z"]


def test_multi_causal_merges_dependencies(client):
    dep = shared.KeyVersion(key="other", vector_clock={"n": 3})
    p = pb.MultiKeyCausalValue(vector_clock={"a": 1}, dependencies=[dep], values=[b"v1"])
    assert client.put("k-multi", pb.MULTI_CAUSAL, p.SerializeToString()).error == pb.NO_ERROR
    dep2 = shared.KeyVersion(key="other", vector_clock={"n": 5})
    p2 = pb.MultiKeyCausalValue(vector_clock={"b": 1}, dependencies=[dep2], values=[b"v2"])
    assert client.put("k-multi", pb.MULTI_CAUSAL, p2.SerializeToString()).error == pb.NO_ERROR
    t = client.get("k-multi")
    assert t.lattice_type == pb.MULTI_CAUSAL
    v = decode(pb.MultiKeyCausalValue, t.payload)
    assert dict(v.vector_clock) == {"a": 1, "b": 1}
    assert sorted(v.values) == [b"v1", b"v2"]
    assert [(d.key, dict(d.vector_clock)) for d in v.dependencies] == [("other", {"n": 5})]


# ---- merge rules -------------------------------------------------------------------

def test_put_merges_lww_by_timestamp(client):
    client.put("k", pb.LWW, lww(10, b"ten"))
    client.put("k", pb.LWW, lww(5, b"five"))
    assert client.get_lww("k") == (10, b"ten")
    client.put("k", pb.LWW, lww(20, b"twenty"))
    assert client.get_lww("k") == (20, b"twenty")


def test_lww_tie_is_broken_by_value_not_arrival(client):
    client.put("tie1", pb.LWW, lww(9, b"bbb"))
    client.put("tie1", pb.LWW, lww(9, b"aaa"))
    client.put("tie2", pb.LWW, lww(9, b"aaa"))
    client.put("tie2", pb.LWW, lww(9, b"bbb"))
    assert client.get_lww("tie1") == client.get_lww("tie2") == (9, b"bbb")


def test_set_put_merges_by_union(client):
    client.put("s", pb.SET, set_payload(b"1", b"2"))
    client.put("s", pb.SET, set_payload(b"2", b"3"))
    assert list(decode(pb.SetValue, client.get("s").payload).values) == [b"1", b"2", b"3"]


def test_get_of_missing_key_is_key_dne(client):
    assert client.get("never-written").error == pb.KEY_DNE


def test_empty_lww_value_reads_as_key_dne(client):
    client.put("empty", pb.LWW, lww(3, b""))
    assert client.get("empty").error == pb.KEY_DNE


def test_multi_key_request_answers_every_tuple(node, client):
    # Keys of one thread in one request: ask routing which thread serves each.
    keys = [f"multi-{i}" for i in range(40)]
    by_endpoint: dict[str, list[str]] = {}
    for k in keys:
        by_endpoint.setdefault(client.endpoint_for(k), []).append(k)
    for endpoint, ks in by_endpoint.items():
        tuples = [pb.KeyTuple(key=k, lattice_type=pb.LWW, payload=lww(1, k.encode()))
                  for k in ks]
        resp = client.request(pb.PUT, tuples, endpoint)
        assert [t.key for t in resp.tuples] == ks
        assert all(t.error == pb.NO_ERROR for t in resp.tuples)
        resp = client.request(pb.GET, [pb.KeyTuple(key=k) for k in ks], endpoint)
        assert [decode(pb.LWWValue, t.payload).value for t in resp.tuples] == \
               [k.encode() for k in ks]


# ---- refusals ----------------------------------------------------------------------

def test_put_of_other_lattice_type_is_refused_and_changes_nothing(client):
    client.put("typed", pb.LWW, lww(1, b"v"))
    t = client.put("typed", pb.SET, set_payload(b"x"))
    assert t.error == pb.LATTICE
    assert "LWW" in t.error_message and "SET" in t.error_message
    got = client.get("typed")
    assert got.lattice_type == pb.LWW and client.get_lww("typed") == (1, b"v")


def test_put_without_lattice_type_is_refused(client):
    t = client.put("untyped", pb.NONE, lww(1, b"v"))
    assert t.error == pb.LATTICE and "no lattice type" in t.error_message
    assert client.get("untyped").error == pb.KEY_DNE


def test_put_with_garbage_payload_is_refused(client):
    t = client.put("garbage", pb.LWW, b"\xff\xff\xff\xff")
    assert t.error == pb.LATTICE and "not a valid LWW" in t.error_message
    assert client.get("garbage").error == pb.KEY_DNE


def test_unknown_request_type_gets_error(client):
    req = pb.KeyRequest(type=9, response_address=client.response_address, request_id="rq-9")
    req.tuples.append(pb.KeyTuple(key="x"))
    client.send_raw(client.endpoint_for("x"), req.SerializeToString())
    resp = client.recv(pb.KeyResponse, "rq-9")
    assert resp.error == pb.LATTICE and "unknown request type" in resp.error_message


def test_malformed_request_gets_error_and_node_keeps_serving(client):
    good = pb.KeyRequest(type=pb.GET, response_address=client.response_address,
                         request_id="broken-1")
    # A valid prefix followed by a field with an impossible length.
    broken = good.SerializeToString() + b"\x12\xff\xff\xff\x0f"
    client.send_raw(client.endpoint_for("x"), broken)
    resp = client.recv(pb.KeyResponse, "broken-1")
    assert resp.error == pb.LATTICE and "not a valid KeyRequest" in resp.error_message
    for junk in (b"", b"\x00", os.urandom(64), b"\xff" * 1000):
        client.send_raw(client.endpoint_for("x"), junk)
    client.put("after-junk", pb.LWW, lww(1, b"ok"))
    assert client.get_lww("after-junk") == (1, b"ok")


def test_wrong_thread_is_reported_with_the_reason(node, client):
    owner = client.endpoint_for("wt-key")
    other = next(node.thread_endpoint(t) for t in range(node.threads)
                 if node.thread_endpoint(t) != owner)
    resp = client.request(pb.PUT, [pb.KeyTuple(key="wt-key", lattice_type=pb.LWW,
                                               payload=lww(1, b"v"))], other)
    assert resp.tuples[0].error == pb.WRONG_THREAD
    assert "ask routing again" in resp.tuples[0].error_message
    assert client.get("wt-key").error == pb.KEY_DNE


def test_oversized_value_and_request_get_errors(tmp_path):
    n = KvsNode(tmp_path / "small", threads=1,
                extra=["--max-value-bytes", "1024", "--max-request-bytes", "65536"]).start()
    try:
        with AnnaClient(n.routing) as c:
            t = c.put("big", pb.LWW, lww(1, b"x" * 2000))
            assert t.error == pb.LATTICE and "over the limit" in t.error_message
            req = pb.KeyRequest(type=pb.PUT, response_address=c.response_address,
                                request_id="huge")
            req.tuples.append(pb.KeyTuple(key="huge", lattice_type=pb.LWW,
                                          payload=lww(1, b"y" * 70000)))
            c.send_raw(c.endpoint_for("huge"), req.SerializeToString())
            resp = c.recv(pb.KeyResponse, "huge")
            assert resp.error == pb.LATTICE and "--max-request-bytes" in resp.error_message
            assert c.put("small", pb.LWW, lww(1, b"ok")).error == pb.NO_ERROR
    finally:
        n.stop()


# ---- routing -------------------------------------------------------------------------

def test_routing_answers_the_owning_thread_for_each_key(node, client):
    keys = [f"route-{i}" for i in range(50)]
    resp = client.addresses(keys)
    assert resp.error == pb.NO_ERROR
    assert [a.key for a in resp.addresses] == keys
    endpoints = {node.thread_endpoint(t) for t in range(node.threads)}
    seen = set()
    for a in resp.addresses:
        assert len(a.ips) == 1 and a.ips[0] in endpoints
        seen.add(a.ips[0])
        # The answered thread really serves the key.
        assert client.request(pb.GET, [pb.KeyTuple(key=a.key)], a.ips[0]).tuples[0].error \
            == pb.KEY_DNE
    assert seen == endpoints  # 50 keys spread over both threads


# ---- concurrency ---------------------------------------------------------------------

def _writer(routing: str, writer: int, rounds: int) -> None:
    with AnnaClient(routing) as c:
        for r in range(rounds):
            for k in range(5):
                c.put(f"conv-set-{k}", pb.SET, set_payload(f"w{writer}-r{r}".encode()))
                c.put(f"conv-lww-{k}", pb.LWW, lww(writer * 1000 + r, f"w{writer}".encode()))


def test_concurrent_writers_from_several_processes_converge(node, client):
    writers, rounds = 4, 25
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(node.routing, w, rounds)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    expected = sorted(f"w{w}-r{r}".encode() for w in range(writers) for r in range(rounds))
    for k in range(5):
        assert sorted(decode(pb.SetValue, client.get(f"conv-set-{k}").payload).values) == expected
        assert client.get_lww(f"conv-lww-{k}") == ((writers - 1) * 1000 + rounds - 1,
                                                   f"w{writers - 1}".encode())


# ---- durability ----------------------------------------------------------------------

def _put_many(client: AnnaClient, n: int, batch: int = 100) -> dict[str, str]:
    """Acknowledged PUTs of n keys, `batch` tuples per request. Returns key -> endpoint."""
    owners: dict[str, str] = {}
    keys = [f"durable-{i:05d}" for i in range(n)]
    resp = client.addresses(keys[:1])
    for k in keys:
        owners[k] = client.endpoint_for(k)
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(owners[k], []).append(k)
    for endpoint, ks in groups.items():
        for i in range(0, len(ks), batch):
            tuples = [pb.KeyTuple(key=k, lattice_type=pb.LWW, payload=lww(1, k.encode()))
                      for k in ks[i:i + batch]]
            r = client.request(pb.PUT, tuples, endpoint)
            assert all(t.error == pb.NO_ERROR for t in r.tuples)
    return owners


def _missing(client: AnnaClient, owners: dict[str, str]) -> list[str]:
    missing = []
    groups: dict[str, list[str]] = {}
    for k, e in owners.items():
        groups.setdefault(e, []).append(k)
    for endpoint, ks in groups.items():
        for i in range(0, len(ks), 200):
            r = client.request(pb.GET, [pb.KeyTuple(key=k) for k in ks[i:i + 200]], endpoint)
            for t in r.tuples:
                if t.error != pb.NO_ERROR or decode(pb.LWWValue, t.payload).value != t.key.encode():
                    missing.append(t.key)
    return missing


@pytest.mark.parametrize("durability,puts,backend", [
    ("fsync", 10_000, "auto"), ("log", 3000, "auto"), ("fsync", 3000, "inline")])
def test_acknowledged_puts_survive_kill_9(tmp_path, durability, puts, backend):
    """Both logging levels promise what survives a killed process: `fsync` has every
    acknowledged PUT on disk, `log` in the page cache (a power cut could lose it);
    with every log writer."""
    n = KvsNode(tmp_path / "crash", threads=2, durability=durability,
                extra=["--wal-backend", backend]).start()
    with AnnaClient(n.routing) as c:
        owners = _put_many(c, puts)
    n.kill9()
    n.start()
    try:
        with AnnaClient(n.routing) as c:
            assert _missing(c, owners) == []
        assert "recovered" in n.log_text()
    finally:
        n.stop()


def test_torn_log_tail_recovers_up_to_last_whole_record(tmp_path):
    n = KvsNode(tmp_path / "torn", threads=1).start()
    with AnnaClient(n.routing) as c:
        owners = _put_many(c, 500, batch=1)
    n.kill9()
    logs = sorted(p for p in n.data_dir.rglob("*") if p.is_file() and p.suffix == ".log")
    assert logs, f"no log segment in {list(n.data_dir.rglob('*'))}"
    newest = max(logs, key=lambda p: p.stat().st_mtime)
    size = newest.stat().st_size
    os.truncate(newest, size - 7)  # cut the last record in half
    n.start()
    try:
        with AnnaClient(n.routing) as c:
            missing = _missing(c, owners)
        assert missing == ["durable-00499"]  # only the torn record is gone
        assert "torn" in n.log_text()
    finally:
        n.stop()


def test_restart_after_snapshots_keeps_everything(tmp_path):
    n = KvsNode(tmp_path / "snap", threads=2, extra=["--segment-bytes", "65536"]).start()
    with AnnaClient(n.routing) as c:
        owners = _put_many(c, 3000)
        # Overwrite some keys with newer values after snapshots have started.
        for i in range(0, 3000, 7):
            k = f"durable-{i:05d}"
            assert c.put(k, pb.LWW, lww(2, k.encode())).error == pb.NO_ERROR
    time.sleep(0.5)
    assert n.stop() == 0
    assert any(p.name.startswith("snap") for p in n.data_dir.rglob("*")), \
        list(n.data_dir.rglob("*"))
    n.start()
    try:
        with AnnaClient(n.routing) as c:
            assert _missing(c, owners) == []
            assert c.get_lww("durable-00007") == (2, b"durable-00007")
    finally:
        n.stop()


def test_sigterm_stops_cleanly_and_logs_counters(tmp_path):
    n = KvsNode(tmp_path / "term", threads=2).start()
    with AnnaClient(n.routing) as c:
        c.put("a", pb.LWW, lww(1, b"v"))
    assert n.stop(signal.SIGTERM) == 0
    text = n.log_text()
    assert "stopped" in text and "puts=" in text


def _last_counters(node: KvsNode) -> dict[str, int]:
    """The fields of the newest counters line in the node's log ({} before the first)."""
    lines = [l for l in node.log_text().splitlines() if "reply_sockets=" in l]
    if not lines:
        return {}
    return {k: int(v) for k, v in
            (f.split("=", 1) for f in lines[-1].split() if "=" in f and f.split("=")[1].isdigit())}


def test_reply_sockets_of_departed_clients_are_closed_after_reply_idle_ms(tmp_path):
    n = KvsNode(tmp_path / "idle", threads=1, durability="none",
                extra=["--reply-idle-ms", "300", "--stats-interval", "1",
                       "--log-level", "info"]).start()
    try:
        for i in range(3):  # three clients come, are answered, and go
            with AnnaClient(n.routing) as c:
                assert c.put_lww(f"idle-{i}", b"v", 1).error == pb.NO_ERROR
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = _last_counters(n)
            if got.get("reply_expired", 0) >= 3 and got.get("reply_sockets") == 0:
                break
            time.sleep(0.3)
        assert got.get("reply_expired", 0) >= 3 and got.get("reply_sockets") == 0, (
            got, n.log_text())
        # A client that was quiet for longer than the idle time is still answered: its
        # socket is simply opened again.
        with AnnaClient(n.routing) as c:
            assert c.put_lww("idle-late", b"w", 2).error == pb.NO_ERROR
            time.sleep(1.0)
            assert c.get_lww("idle-late") == (2, b"w")
    finally:
        n.stop()


def _pipelined_gets(c: AnnaClient, keys: list[str], node: KvsNode) -> dict[str, bytes]:
    """Sends a GET for every key back to back while the node is stopped (so that its
    worker finds them all at once, as under a streaming client's load, however slow
    this sender), then collects every reply."""
    ids = {}
    node.proc.send_signal(signal.SIGSTOP)
    try:
        for k in keys:
            req = pb.KeyRequest(type=pb.GET, response_address=c.response_address,
                                request_id=c.next_id())
            req.tuples.append(pb.KeyTuple(key=k))
            ids[req.request_id] = k
            c.send_raw(c.endpoint_for(k), req.SerializeToString())
        time.sleep(0.2)
    finally:
        node.proc.send_signal(signal.SIGCONT)
    got = {}
    while len(got) < len(ids):
        resp = c.recv(pb.KeyResponse)
        assert resp.response_id in ids and resp.tuples[0].error == pb.NO_ERROR
        v = pb.LWWValue()
        v.ParseFromString(resp.tuples[0].payload)
        got[ids[resp.response_id]] = v.value
    return got


@pytest.mark.parametrize("cork", ["on", "off"])
def test_long_pipelined_reply_runs_are_corked_and_every_reply_arrives(tmp_path, cork):
    n = KvsNode(tmp_path / f"cork-{cork}", threads=1, durability="none",
                extra=[f"--reply-cork={cork}", "--stats-interval", "1",
                       "--log-level", "info"]).start()
    try:
        with AnnaClient(n.routing) as c:
            keys = [f"cork-{i}" for i in range(1000)]
            for i, k in enumerate(keys):
                assert c.put_lww(k, bytes([i % 251]) * 1024, 1).error == pb.NO_ERROR
            for _ in range(3):  # 1 MiB of replies per burst: long runs, several turns
                got = _pipelined_gets(c, keys, n)
                assert got == {k: bytes([i % 251]) * 1024 for i, k in enumerate(keys)}
            # After the bursts, a lone request is answered (nothing is left corked).
            assert c.get_lww("cork-7") == (1, bytes([7]) * 1024)
        # Counters reach the log within a second or two of an idle worker.
        deadline = time.monotonic() + (15 if cork == "on" else 3)
        while (_last_counters(n).get("reply_corks", 0) == 0
               and time.monotonic() < deadline):
            time.sleep(0.2)
        corks = _last_counters(n).get("reply_corks", 0)
        assert corks >= 1 if cork == "on" else corks == 0, n.log_text()
    finally:
        n.stop()


def test_reply_idle_ms_out_of_range_is_refused(tmp_path):
    n = KvsNode(tmp_path / "bad-idle", threads=1, durability="none",
                extra=["--reply-idle-ms", "-5"])
    proc = subprocess.run(n.command(), capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "--reply-idle-ms" in proc.stderr + proc.stdout


def test_durability_log_serves_and_recovers_after_clean_stop(tmp_path):
    n = KvsNode(tmp_path / "log", threads=1, durability="log").start()
    with AnnaClient(n.routing) as c:
        owners = _put_many(c, 300)
    assert n.stop() == 0
    n.start()
    try:
        with AnnaClient(n.routing) as c:
            assert _missing(c, owners) == []
    finally:
        n.stop()


def test_durability_none_keeps_nothing_and_says_so(tmp_path):
    """`none` is memory only: nothing is written to the data directory, a restart
    comes back empty, and the startup log says so."""
    n = KvsNode(tmp_path / "mem", threads=1, durability="none").start()
    try:
        with AnnaClient(n.routing) as c:
            assert c.put_lww("kept-in-memory", b"v", 1).error == pb.NO_ERROR
            assert c.get_lww("kept-in-memory") == (1, b"v")
        assert "MEMORY ONLY" in n.log_text() and "nothing is recovered" in n.log_text()
        assert n.stop() == 0
        written = [p for p in n.data_dir.rglob("*") if p.is_file()]
        assert written == []
        n.start()
        with AnnaClient(n.routing) as c:
            assert c.get("kept-in-memory").error == pb.KEY_DNE
    finally:
        n.stop()


def test_bad_flag_is_reported_and_exits_nonzero(tmp_path):
    import subprocess
    from kvs_harness import bin_dir
    r = subprocess.run([str(bin_dir() / "squall-kvs"), "--threads", "many"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "threads" in (r.stderr + r.stdout)


# ---- cache subscriptions ---------------------------------------------------------------

def _announce(client, cache_id: str, keys: list[str], ts: int) -> None:
    shared_set = shared.StringSet(keys=keys).SerializeToString()
    t = client.put(f"ANNA_METADATA|cache_ip|{cache_id}", pb.LWW, lww(ts, shared_set))
    assert t.error == pb.NO_ERROR


def test_changed_keys_are_pushed_to_the_caches_holding_them(node, client):
    ctx = zmq.Context.instance()
    cache = ctx.socket(zmq.PULL)
    port = cache.bind_to_random_port("tcp://127.0.0.1")
    try:
        keys = [f"cached-{i}" for i in range(6)]  # spread over both threads
        for k in keys + ["not-cached"]:
            client.put(k, pb.LWW, lww(1, b"old"))
        _announce(client, f"127.0.0.1:{port}", keys, ts=1)
        time.sleep(0.3)  # the owner forwards the key set to every worker
        for k in keys:
            client.put(k, pb.LWW, lww(2, k.encode()))
        client.put("not-cached", pb.LWW, lww(2, b"new"))
        client.put(keys[0], pb.LWW, lww(1, b"stale"))  # changes nothing: no push
        pushed = {}
        while cache.poll(3000):
            req = decode(pb.KeyRequest, cache.recv())
            assert req.type == pb.PUT and req.response_address == ""
            for t in req.tuples:
                pushed.setdefault(t.key, []).append(decode(pb.LWWValue, t.payload).value)
            if len(pushed) == len(keys) and all(len(v) >= 1 for v in pushed.values()):
                if not cache.poll(300):
                    break
        assert sorted(pushed) == sorted(keys)
        assert all(v == [k.encode()] for k, v in pushed.items())
        # An empty key set unsubscribes.
        _announce(client, f"127.0.0.1:{port}", [], ts=2)
        time.sleep(0.3)
        client.put(keys[1], pb.LWW, lww(3, b"after"))
        assert not cache.poll(500)
    finally:
        cache.close(0)


def test_full_disk_stops_the_node_without_acknowledging_the_lost_write(tmp_path):
    """A write the log cannot take is never acknowledged, and the node exits non-zero
    instead of serving keys whose durability it can no longer promise."""
    import subprocess
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        n = KvsNode(mnt / "data", threads=1)
        n.log_path = tmp_path / "kvs-tiny.log"  # the log file must not fill the disk
        n.start()
        acked = []
        with AnnaClient(n.routing, timeout=3) as c:
            for i in range(400):  # 400 x 4 KiB > 256 KiB
                try:
                    t = c.put(f"fill-{i}", pb.LWW, lww(1, b"x" * 4096))
                except TimeoutError:
                    break
                assert t.error == pb.NO_ERROR
                acked.append(f"fill-{i}")
        assert 0 < len(acked) < 400
        assert n.proc.wait(30) == 1
        text = n.log_text()
        assert "refused a write" in text and "stopping the node" in text
        # Every acknowledged write is in the log: recover a copy on a roomy disk.
        shutil.copytree(mnt / "data", tmp_path / "copy")
        (tmp_path / "copy" / "LOCK").unlink(missing_ok=True)
        m = KvsNode(tmp_path / "copy", threads=1).start()
        try:
            with AnnaClient(m.routing) as c:
                assert all(c.get(k).error == pb.NO_ERROR for k in acked)
        finally:
            m.stop()
    finally:
        if n.alive():
            n.kill9()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
