"""squall-cache's miss path over its unix socket and the asynchronous put: real
squall-kvs + squall-cache, executors played by _squall.CacheClient (the extension the
executors use) and squall._nodecache.NodeCache, the cache read from outside with
squall-cache-peek.

Pins (with CacheClient(leases=False): the fetch leases are test_cache_lease.py's):
a miss is a direct miss (docs/cache.md): the KVS answers the executor itself,
which hands the bytes back (FILL), and the value is cached for the next reader (which
then hits LMDB, no payload); a large one (over 1 MiB) is answered only once the
daemon stored what was handed back -- on the unix socket up to a datagram, as a
two-frame ZeroMQ message beyond -- so that it is read zero copy; an executor that never hands the answer back only delays the
daemon's own read by its bound, one that says it cannot (NOFILL) not at all;
concurrent misses over many connections share one KVS fetch (the others answered
inline); a second reader right after a direct answer never causes a second fetch, and
a write acked right after it is never hidden by the deferred store of the fetched
value; fetch() is answered on the socket (never direct); garbage on the socket is refused while serving on; a daemon out of
file descriptors pauses its listener instead of spinning and serves again once fds
are freed; without the socket the
client falls back to ZeroMQ; NodeCache.get decodes the inline bytes into the object;
put(wait=False) returns before the KVS acknowledged and the write lands, its failures
are logged and counted by the daemon.
"""
from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from test_cache_daemon import (PB, CacheDaemon, Executor, lww, object_payload,
                               wait_for)
from test_cache_daemon import anna, cache, kvs  # noqa: F401 -- the same fixtures

squall = pytest.importorskip("squall")
from squall import _squall  # noqa: E402
from squall._nodecache import NodeCache  # noqa: E402

KEY_DNE = 1


@pytest.fixture
def client(cache):
    c = _squall.CacheClient(str(cache.dir), timeout=10.0, leases=False)
    yield c
    c.close()


def cached_payload(cache: CacheDaemon, key: str) -> bytes | None:
    seen = cache.peek(key)[key]
    return bytes.fromhex(seen["pickle"]) if seen["found"] and seen["kind"] == "raw" else None


def test_small_miss_comes_straight_from_the_kvs_and_is_cached_for_the_next_reader(
        anna, cache, client):
    assert client.channel == "unix"
    anna.put_lww("small", b"hello", 7)
    err, ltype, payload = client.get("small")
    assert (err, ltype, payload) == (0, PB.LWW, lww(b"hello", 7))
    wait_for(lambda: cached_payload(cache, "small") == lww(b"hello", 7),
             what="deferred store")
    assert client.get("small") == (0, PB.LWW, None)  # a hit: read LMDB
    c = cache.counters()
    assert (c["misses"], c["hits"], c["fetches"], c["direct"], c["fills"],
            c["inline_replies"]) == (1, 1, 1, 1, 1, 0)


def test_fetch_is_answered_on_the_socket_never_directly(anna, cache, client):
    anna.put_lww("f", b"v", 1)
    assert client.fetch(["f"]) == {"f": 0}
    assert cached_payload(cache, "f") == lww(b"v", 1)
    c = cache.counters()
    assert (c["fetches"], c["direct"], c["fills"]) == (1, 0, 0)


def test_fetch_refused_by_the_daemon_raises_its_reason_and_the_daemon_keeps_serving(
        anna, cache, client):
    with pytest.raises(_squall.SquallError, match="key longer than 511 bytes"):
        client.fetch(["k" * 600])
    anna.put_lww("after", b"v", 1)
    assert client.fetch(["after"]) == {"after": 0}


def test_missing_key_over_the_socket_is_key_dne(cache, client):
    assert client.get("nowhere") == (KEY_DNE, 0, None)
    assert client.fetch(["nowhere"]) == {"nowhere": KEY_DNE}


@pytest.mark.parametrize("n, channel", [(200_000, "datagram"), (1_000_000, "zeromq")])
def test_large_direct_miss_is_handed_back_and_stored_before_it_is_answered(
        anna, cache, client, n, channel):
    payload, _, _ = object_payload(np.arange(n, dtype=np.float64), 3)  # 1.6 MB, 8 MB
    anna.put("big", PB.LWW, payload)
    assert client.get("big") == (0, PB.LWW, None)  # read it zero copy from the cache
    seen = cache.peek("big")["big"]  # no waiting: stored when answered
    assert seen["found"] and seen["kind"] == "object" and seen["zero_copy"]
    c = cache.counters()
    assert (c["fetches"], c["direct"], c["fills"], c["inline_replies"]) == (1, 1, 1, 0)


def test_a_key_known_to_be_large_is_not_missed_directly_again(tmp_path, anna, kvs):
    # room for one 1.6 MB value: the two keys evict each other
    (tmp_path / "small").mkdir()
    cache = CacheDaemon(tmp_path / "small", kvs, budget="2500K").start()
    client = _squall.CacheClient(str(cache.dir), timeout=10.0, leases=False)
    try:
        for key in ("big-a", "big-b"):
            payload, _, _ = object_payload(np.arange(200_000, dtype=np.float64), 1)
            anna.put(key, PB.LWW, payload)
        for key in ("big-a", "big-b", "big-a", "big-b"):
            assert client.get(key) == (0, PB.LWW, None)
        c = cache.counters()
        assert (c["fetches"], c["direct"], c["fills"]) == (4, 2, 2)  # the first two only
    finally:
        client.close()
        cache.stop()


def test_direct_misses_off_loopback_reply_on_the_daemons_public_host(tmp_path, anna, kvs):
    (tmp_path / "pub").mkdir()
    cache = CacheDaemon(tmp_path / "pub", kvs,
                        extra=["--public-ip", "127.0.0.2", "--bind", "0.0.0.0"]).start()
    client = _squall.CacheClient(str(cache.dir), timeout=10.0, leases=False)
    try:
        assert (cache.dir / "reply-host").read_text() == "127.0.0.2\n"
        assert client.response_address.startswith("tcp://127.0.0.2:")
        anna.put_lww("far", b"away", 2)
        assert client.get("far") == (0, PB.LWW, lww(b"away", 2))
        c = cache.counters()
        assert (c["fetches"], c["direct"]) == (1, 1)
    finally:
        client.close()
        cache.stop()


def test_a_bad_reply_host_falls_back_to_loopback(tmp_path, cache, anna):
    (cache.dir / "reply-host").write_text("not a host!\n")
    client = _squall.CacheClient(str(cache.dir), timeout=10.0, leases=False)
    try:
        assert client.response_address.startswith("tcp://127.0.0.1:")
        anna.put_lww("near", b"x", 1)
        assert client.get("near") == (0, PB.LWW, lww(b"x", 1))
    finally:
        client.close()


@contextlib.contextmanager
def _direct_get(cache: CacheDaemon, key: str, rid: str):
    """A hand-written executor: sends a direct GET on requests.sock with its own PULL
    socket as the response address; yields (unix socket, pull socket)."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        s.connect(str(cache.dir / "requests.sock"))
        req = PB.KeyRequest(type=PB.GET, request_id=rid,
                            response_address=f"tcp://127.0.0.1:{port}")
        req.tuples.append(PB.KeyTuple(key=key))
        s.send(req.SerializeToString())
        yield s, pull
    finally:
        s.close()
        pull.close(0)
        ctx.term()


def _socket_answer(s: socket.socket, timeout: float):
    s.settimeout(timeout)
    resp = PB.KeyResponse()
    resp.ParseFromString(s.recv(1 << 22))
    return resp


@pytest.mark.parametrize("hand_back", ["never", "nofill"])
def test_direct_miss_the_executor_does_not_hand_back_is_read_by_the_daemon(
        anna, cache, hand_back):
    anna.put_lww("lost", b"value", 4)
    with _direct_get(cache, "lost", "r1") as (s, pull):
        assert pull.poll(10_000), "the KVS did not answer the executor"
        resp = PB.KeyResponse()
        resp.ParseFromString(pull.recv())
        assert resp.response_id.endswith(".r1") and resp.tuples[0].key == "lost"
        assert resp.tuples[0].payload == lww(b"value", 4)
        t0 = time.monotonic()
        if hand_back == "nofill":
            s.send(b"\x00N")
        answer = _socket_answer(s, 10)  # the daemon read it itself and answers here
        took = time.monotonic() - t0
        assert answer.response_id == "r1" and answer.tuples[0].error == PB.NO_ERROR
        assert answer.tuples[0].payload == lww(b"value", 4)
        assert took < 0.5 if hand_back == "nofill" else took > 0.5, took
        wait_for(lambda: cached_payload(cache, "lost") == lww(b"value", 4), what="store")
        c = cache.counters()
        assert (c["fetches"], c["direct"], c["fills"]) == (1, 1, 0)


def test_late_or_foreign_hand_back_is_ignored(anna, cache, client):
    anna.put_lww("k", b"v", 1)
    with _direct_get(cache, "k", "r9") as (s, pull):
        assert pull.poll(10_000)
        kvs_answer = pull.recv()
        s.send(b"\x00N")
        _socket_answer(s, 10)
        s.send(b"\x00F" + kvs_answer)  # late: the daemon re-read it already
        s.send(b"\x00F" + b"\x0a\xff junk")
        s.send(b"\x00?")
        assert client.get("k") == (0, PB.LWW, None)  # served on, cached once
        c = cache.counters()
        assert (c["fetches"], c["fills"], c["bad_requests"]) == (1, 2, 1)


def test_concurrent_misses_on_many_connections_share_one_fetch(anna, kvs, cache):
    anna.put_lww("hot", b"x" * 1000, 3)
    clients = [_squall.CacheClient(str(cache.dir), timeout=20.0, leases=False) for _ in range(8)]
    results: list = [None] * len(clients)

    def miss(i: int) -> None:
        results[i] = clients[i].get("hot")

    kvs.proc.send_signal(signal.SIGSTOP)  # hold the fetch in flight
    try:
        threads = [threading.Thread(target=miss, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        time.sleep(0.5)
    finally:
        kvs.proc.send_signal(signal.SIGCONT)
    for t in threads:
        t.join(30)
    for c in clients:
        c.close()
    assert all(r == (0, PB.LWW, lww(b"x" * 1000, 3)) for r in results), results
    c = cache.counters()
    # one direct miss, handed back; the other seven joined its fetch and were
    # answered inline on their sockets
    assert c["fetches"] == 1 and c["coalesced"] == 7 and c["direct"] == 1
    assert c["fills"] == 1 and c["inline_replies"] == 7


def test_direct_answered_value_is_never_fetched_twice_nor_hides_a_later_write(
        tmp_path, anna, cache, client):
    ex = Executor(cache, tmp_path)
    other = _squall.CacheClient(str(cache.dir), timeout=10.0, leases=False)
    try:
        for i in range(20):  # the PUT lands while the fetched value may be deferred
            key = f"race{i}"
            anna.put_lww(key, b"v1", 1)
            assert client.get(key)[2] == lww(b"v1", 1)
            # at once, before or after the hand-back reached the daemon: a hit, or an
            # inline answer from the fetch it joined -- never a second fetch
            assert other.get(key) in ((0, PB.LWW, None), (0, PB.LWW, lww(b"v1", 1)))
            assert ex.put(key, lww(b"v2", 2)).tuples[0].error == PB.NO_ERROR
            assert cached_payload(cache, key) == lww(b"v2", 2), key
        c = cache.counters()
        assert (c["fetches"], c["misses"] - c["coalesced"]) == (20, 20)
        assert c["hits"] + c["coalesced"] == 20
    finally:
        other.close()
        ex.close()


def test_garbage_on_the_socket_is_refused_and_the_daemon_serves_on(anna, cache, client):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(str(cache.dir / "requests.sock"))
    s.send(b"\x0a\xff\xff garbage")
    req = PB.KeyRequest(type=PB.PUT, request_id="p1")  # only GETs here
    req.tuples.append(PB.KeyTuple(key="k", lattice_type=PB.LWW, payload=lww(b"v", 1)))
    s.send(req.SerializeToString())
    resp = PB.KeyResponse()
    s.settimeout(10)
    resp.ParseFromString(s.recv(1 << 20))
    assert resp.response_id == "p1" and resp.error == PB.LATTICE
    s.close()
    anna.put_lww("after", b"fine", 1)
    assert client.get("after")[0] == 0
    assert cache.counters()["bad_requests"] >= 2


def _cpu_seconds(pid: int) -> float:
    """utime + stime of process pid (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _uds_connect(cache: CacheDaemon) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(str(cache.dir / "requests.sock"))
    return s


def test_out_of_fds_the_listener_pauses_instead_of_spinning_then_serves_again(cache):
    pid = cache.proc.pid
    top = max(int(f) for f in os.listdir(f"/proc/{pid}/fd"))
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (top + 3, limits[1]))
    conns = []
    try:
        for _ in range(16):  # two or so are accepted, the rest wait in the listen queue
            conns.append(_uds_connect(cache))
        wait_for(lambda: cache.counters()["accept_pauses"] >= 1, what="accept failing")
        cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(1.0)
        per_s = (_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        assert per_s < 0.3, f"daemon used {per_s:.2f} s of CPU per s with a pending backlog"
        assert cache.counters()["accept_pauses"] >= 2  # retried, not given up
        assert cache.log().count("cannot accept executor connections") == 1  # per episode
        for s in conns:
            s.close()
        conns = []
        s = _uds_connect(cache)  # still under the low limit: the closed ones freed fds
        conns.append(s)
        req = PB.KeyRequest(type=PB.PUT, request_id="again")  # refused at once: a reply
        req.tuples.append(PB.KeyTuple(key="k", lattice_type=PB.LWW, payload=lww(b"v", 1)))
        s.send(req.SerializeToString())
        s.settimeout(10)
        resp = PB.KeyResponse()
        resp.ParseFromString(s.recv(1 << 20))
        assert resp.response_id == "again" and resp.error == PB.LATTICE
        assert "accepting executor connections on requests.sock again" in cache.log()
    finally:
        for s in conns:
            s.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)


def test_without_the_socket_the_client_uses_zeromq(anna, cache):
    os.unlink(cache.dir / "requests.sock")  # as with a daemon that has no such socket
    c = _squall.CacheClient(str(cache.dir), timeout=10.0, leases=False)
    try:
        assert c.channel == "zmq"
        anna.put_lww("z", b"zmq", 1)
        assert c.get("z") == (0, PB.LWW, None)  # stored, then answered: read LMDB
        assert cached_payload(cache, "z") == lww(b"zmq", 1)
    finally:
        c.close()


@pytest.mark.parametrize("leases", [True, False], ids=["leased", "direct"])
def test_node_cache_decodes_an_inline_miss_into_the_object(anna, cache, leases):
    payload, _, _ = object_payload(np.arange(10_000, dtype=np.float64), 5)  # 80 KB
    anna.put("arr", PB.LWW, payload)
    nc = NodeCache(str(cache.dir), fetch_timeout=10.0, leases=leases)
    try:
        found, a = nc.get("arr")
        assert found and isinstance(a, np.ndarray) and a[-1] == 9999.0
        assert nc.stats["fetches"] == 1 and nc.stats["fallbacks"] == 0
        wait_for(lambda: cache.peek("arr")["arr"]["found"], what="deferred store")
        found, b = nc.get("arr")  # now from LMDB, zero copy
        assert found and np.array_equal(a, b) and not b.flags.writeable
        assert nc.stats["hits"] == 1
        c = cache.counters()
        assert (c["direct"], c["fills"], c["lease_fills"], c["inline_replies"]) == \
            ((0, 0, 1, 0) if leases else (1, 1, 0, 0))
        assert c["fetches"] == 1
    finally:
        nc.close()


def test_asynchronous_put_returns_before_the_ack_and_lands(anna, kvs, cache, client):
    anna.put_lww("aw", b"old", 1)
    client.get("aw")
    kvs.proc.send_signal(signal.SIGSTOP)  # no KVS ack can come back now
    try:
        t0 = time.monotonic()
        assert client.put("aw", PB.LWW, lww(b"new", 2), wait=False) == 0
        assert time.monotonic() - t0 < 1.0
        with pytest.raises(squall.SquallTimeoutError):
            client.put("aw", PB.LWW, lww(b"newer", 3), timeout=0.3)  # waits for the ack
        assert cached_payload(cache, "aw") == lww(b"old", 1)  # not acked: not cached
    finally:
        kvs.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: anna.get_lww("aw") == (3, b"newer"), what="both writes in the KVS")
    wait_for(lambda: cached_payload(cache, "aw") == lww(b"newer", 3), what="merged on ack")
    assert cache.counters()["puts"] == 2


def test_failed_asynchronous_put_is_logged_by_the_daemon(anna, cache, client):
    anna.put_lww("typed", b"v", 1)
    client.get("typed")
    wrong = PB.SetValue(values=[b"a"]).SerializeToString()
    assert client.put("typed", PB.SET, wrong, wait=False) == 0  # queued, not checked
    wait_for(lambda: "refused request" in cache.log(), what="refusal in the log")
    assert cache.counters()["bad_requests"] == 1


def test_node_cache_put_without_waiting(anna, cache):
    nc = NodeCache(str(cache.dir), fetch_timeout=10.0)
    try:
        assert nc.put("nw", PB.LWW, lww(b"queued", 4), wait=False) is True
        wait_for(lambda: anna.get_lww("nw") == (4, b"queued"), what="asynchronous write")
        assert nc.stats["puts"] == 1
    finally:
        nc.close()
