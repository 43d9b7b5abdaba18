"""squall-cache's miss path over its unix socket and the asynchronous put: real
squall-kvs + squall-cache, executors played by _squall.CacheClient (the extension the
executors use) and squall._nodecache.NodeCache, the cache read from outside with
squall-cache-peek.

Pins: a small miss comes back inline with the KVS's bytes and is cached for the next
reader (which then hits LMDB, no payload); a large miss is stored before it is
answered; concurrent misses over many connections share one KVS fetch; a write acked
right after an inline answer is never hidden by the deferred store of the fetched
value; garbage on the socket is refused while serving on; without the socket the
client falls back to ZeroMQ; NodeCache.get decodes the inline bytes into the object;
put(wait=False) returns before the KVS acknowledged and the write lands, its failures
are logged and counted by the daemon.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time

import numpy as np
import pytest

from test_cache_daemon import (PB, CacheDaemon, Executor, lww, object_payload,
                               wait_for)
from test_cache_daemon import anna, cache, kvs  # noqa: F401 -- the same fixtures

squall = pytest.importorskip("squall")
from squall import _squall  # noqa: E402
from squall._nodecache import NodeCache  # noqa: E402

KEY_DNE = 1


@pytest.fixture
def client(cache):
    c = _squall.CacheClient(str(cache.dir), timeout=10.0)
    yield c
    c.close()


def cached_payload(cache: CacheDaemon, key: str) -> bytes | None:
    seen = cache.peek(key)[key]
    return bytes.fromhex(seen["pickle"]) if seen["found"] and seen["kind"] == "raw" else None


def test_small_miss_comes_back_inline_and_is_cached_for_the_next_reader(anna, cache,
                                                                        client):
    assert client.channel == "unix"
    anna.put_lww("small", b"hello", 7)
    err, ltype, payload = client.get("small")
    assert (err, ltype, payload) == (0, PB.LWW, lww(b"hello", 7))
    wait_for(lambda: cached_payload(cache, "small") == lww(b"hello", 7),
             what="deferred store")
    assert client.get("small") == (0, PB.LWW, None)  # a hit: read LMDB
    c = cache.counters()
    assert (c["misses"], c["hits"], c["fetches"], c["inline_replies"]) == (1, 1, 1, 1)


def test_missing_key_over_the_socket_is_key_dne(cache, client):
    assert client.get("nowhere") == (KEY_DNE, 0, None)
    assert client.fetch(["nowhere"]) == {"nowhere": KEY_DNE}


def test_large_miss_is_stored_before_it_is_answered(anna, cache, client):
    payload, _, _ = object_payload(np.arange(200_000, dtype=np.float64), 3)  # 1.6 MB
    anna.put("big", PB.LWW, payload)
    assert client.get("big") == (0, PB.LWW, None)
    seen = cache.peek("big")["big"]  # no waiting: stored when answered
    assert seen["found"] and seen["kind"] == "object" and seen["zero_copy"]
    assert cache.counters()["inline_replies"] == 0


def test_concurrent_misses_on_many_connections_share_one_fetch(anna, kvs, cache):
    anna.put_lww("hot", b"x" * 1000, 3)
    clients = [_squall.CacheClient(str(cache.dir), timeout=20.0) for _ in range(8)]
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
    assert c["fetches"] == 1 and c["coalesced"] == 7 and c["inline_replies"] == 8


def test_inline_answered_value_is_a_hit_at_once_and_never_hides_a_later_write(
        tmp_path, anna, cache, client):
    ex = Executor(cache, tmp_path)
    other = _squall.CacheClient(str(cache.dir), timeout=10.0)
    try:
        for i in range(20):  # the PUT lands while the fetched value may be deferred
            key = f"race{i}"
            anna.put_lww(key, b"v1", 1)
            assert client.get(key)[2] == lww(b"v1", 1)
            assert other.get(key) == (0, PB.LWW, None)  # a hit at once: no second fetch
            assert ex.put(key, lww(b"v2", 2)).tuples[0].error == PB.NO_ERROR
            assert cached_payload(cache, key) == lww(b"v2", 2), key
        c = cache.counters()
        assert (c["fetches"], c["misses"], c["hits"]) == (20, 20, 20)
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


def test_without_the_socket_the_client_uses_zeromq(anna, cache):
    os.unlink(cache.dir / "requests.sock")  # as with a daemon that has no such socket
    c = _squall.CacheClient(str(cache.dir), timeout=10.0)
    try:
        assert c.channel == "zmq"
        anna.put_lww("z", b"zmq", 1)
        assert c.get("z") == (0, PB.LWW, None)  # stored, then answered: read LMDB
        assert cached_payload(cache, "z") == lww(b"zmq", 1)
    finally:
        c.close()


def test_node_cache_decodes_an_inline_miss_into_the_object(anna, cache):
    payload, _, _ = object_payload(np.arange(10_000, dtype=np.float64), 5)  # 80 KB
    anna.put("arr", PB.LWW, payload)
    nc = NodeCache(str(cache.dir), fetch_timeout=10.0)
    try:
        found, a = nc.get("arr")
        assert found and isinstance(a, np.ndarray) and a[-1] == 9999.0
        assert nc.stats["fetches"] == 1 and nc.stats["fallbacks"] == 0
        wait_for(lambda: cache.peek("arr")["arr"]["found"], what="deferred store")
        found, b = nc.get("arr")  # now from LMDB, zero copy
        assert found and np.array_equal(a, b) and not b.flags.writeable
        assert nc.stats["hits"] == 1
        assert cache.counters()["inline_replies"] == 1
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
