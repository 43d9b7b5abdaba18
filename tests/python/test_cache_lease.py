"""Fetch leases (docs/cache.md "Fetch leases"): real squall-kvs + squall-cache,
executors played by _squall.CacheClient (leases on, the default) in this process and
in child processes.

Pins: a leased miss reads the KVS itself and hands the value to the daemon (counted
as the key's one fetch, no direct miss), the next reader hits; misses of one key in
several processes while its holder's KVS read is in flight cause one KVS read (the
others wait for the release, then hit); a holder killed with SIGKILL is taken over at
once, one that hangs only until its deadline; a write acked right after a leased
read is what the cache shows, and a second reader never causes a second read; a
write landing in the announcement gap of a leased read reaches the cache; a large
value (over 1 MiB) is answered only once the daemon stored it (read zero copy), and
its key, now known to be large, goes through the daemon next time; a restarted
daemon rebuilds the table and leased misses go on; KEY_DNE under a lease.
NodeCache over a leased miss: test_cache_cold.py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from test_cache_daemon import PB, CacheDaemon, Executor, keyset, lww, wait_for
from test_cache_daemon import anna, cache, kvs  # noqa: F401 -- the same fixtures

squall = pytest.importorskip("squall")
from squall import _squall  # noqa: E402


@pytest.fixture
def client(cache):
    c = _squall.CacheClient(str(cache.dir), timeout=10.0)
    yield c
    c.close()


def cached_payload(cache: CacheDaemon, key: str) -> bytes | None:
    seen = cache.peek(key)[key]
    return bytes.fromhex(seen["pickle"]) if seen["found"] and seen["kind"] == "raw" else None


_CHILD = textwrap.dedent("""
    import sys
    from squall import _squall
    c = _squall.CacheClient(sys.argv[1], timeout=float(sys.argv[3]))
    print("ready", flush=True)
    err, ltype, payload = c.get(sys.argv[2])
    print(err, ltype, payload.hex() if payload is not None else "-", flush=True)
    c.close()
""")


def child_get(cache: CacheDaemon, key: str, timeout: float = 10.0,
              wait: bool = True) -> subprocess.Popen:
    """A process that misses key once (CacheClient.get) and prints the outcome; with
    wait, returned once it is about to miss."""
    p = subprocess.Popen([sys.executable, "-c", _CHILD, str(cache.dir), key, str(timeout)],
                         stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    if wait:
        assert p.stdout.readline().strip() == "ready"
    return p


def child_result(p: subprocess.Popen) -> tuple[int, int, bytes | None]:
    out, _ = p.communicate(timeout=30)
    err, ltype, hexed = out.split()
    return int(err), int(ltype), None if hexed == "-" else bytes.fromhex(hexed)


def test_leased_miss_reads_the_kvs_itself_and_hands_the_value_over(anna, cache, client):
    anna.put_lww("small", b"hello", 7)
    assert client.get("small") == (0, PB.LWW, lww(b"hello", 7))
    wait_for(lambda: cached_payload(cache, "small") == lww(b"hello", 7), what="stored")
    assert client.get("small") == (0, PB.LWW, None)  # cached now: the daemon's hit
    c = cache.counters()
    assert (c["lease_fills"], c["fetches"], c["direct"], c["fills"], c["hits"]) == \
        (1, 1, 0, 0, 1)


def test_missing_key_under_a_lease_is_key_dne_and_leaves_the_lease_free(cache, client):
    assert client.get("nothing")[0] == 1
    assert client.get("nothing")[0] == 1  # a second claim is not kept waiting
    assert cache.counters()["lease_fills"] == 0


def test_misses_in_several_processes_share_one_kvs_read(anna, kvs, cache):
    anna.put_lww("hot", b"x" * 1000, 3)
    kvs.proc.send_signal(signal.SIGSTOP)  # hold the first claimer's read in flight
    try:
        # started together: all claim within the first holder's 2 s lease
        children = [child_get(cache, "hot", wait=False) for _ in range(6)]
        for p in children:
            assert p.stdout.readline().strip() == "ready"
        time.sleep(0.5)
    finally:
        kvs.proc.send_signal(signal.SIGCONT)
    results = [child_result(p) for p in children]
    assert all(r[:2] == (0, PB.LWW) for r in results), results
    # the holder returns the bytes it read; the waiters read LMDB once released
    assert sorted(r[2] is None for r in results) == [False] + [True] * 5, results
    assert [r[2] for r in results if r[2] is not None] == [lww(b"x" * 1000, 3)]
    c = cache.counters()
    assert (c["fetches"], c["lease_fills"], c["direct"], c["coalesced"]) == (1, 1, 0, 0)
    assert c["hits"] == 5


def test_a_killed_holder_is_taken_over_at_once(anna, kvs, cache, client):
    anna.put_lww("dead", b"v", 1)
    kvs.proc.send_signal(signal.SIGSTOP)
    try:
        holder = child_get(cache, "dead")
        time.sleep(0.3)  # it claimed the lease and waits for the KVS
        holder.kill()
        holder.wait(10)
    finally:
        kvs.proc.send_signal(signal.SIGCONT)
    t0 = time.monotonic()
    assert client.get("dead") == (0, PB.LWW, lww(b"v", 1))  # taken over: our own read
    assert time.monotonic() - t0 < 1.0
    wait_for(lambda: cached_payload(cache, "dead") == lww(b"v", 1), what="stored")
    c = cache.counters()
    assert (c["lease_fills"], c["fetches"]) == (1, 1)


def test_a_hung_holder_delays_others_only_until_its_deadline(anna, kvs, cache, client):
    anna.put_lww("hung", b"v", 1)
    kvs.proc.send_signal(signal.SIGSTOP)
    holder = child_get(cache, "hung", timeout=1.0)  # its lease: at most 1 s
    try:
        time.sleep(0.2)
        holder.send_signal(signal.SIGSTOP)  # alive, holding the lease, never done
        kvs.proc.send_signal(signal.SIGCONT)
        t0 = time.monotonic()
        assert client.get("hung")[:2] == (0, PB.LWW)  # then the daemon fetched it
        waited = time.monotonic() - t0
        assert 0.3 < waited < 2.5, waited
    finally:
        kvs.proc.send_signal(signal.SIGCONT)
        holder.kill()
        holder.wait(10)
    assert cached_payload(cache, "hung") == lww(b"v", 1)
    c = cache.counters()
    assert (c["lease_fills"], c["fetches"]) == (0, 1)


def test_leased_value_is_never_read_twice_nor_hides_a_later_write(
        tmp_path, anna, cache, client):
    ex = Executor(cache, tmp_path)
    other = _squall.CacheClient(str(cache.dir), timeout=10.0)
    try:
        for i in range(20):  # the PUT lands while the hand-over may be on its way
            key = f"race{i}"
            anna.put_lww(key, b"v1", 1)
            assert client.get(key)[2] == lww(b"v1", 1)
            # at once: it waits for the lease or finds the value stored -- a hit
            assert other.get(key) == (0, PB.LWW, None)
            assert ex.put(key, lww(b"v2", 2)).tuples[0].error == PB.NO_ERROR
            assert cached_payload(cache, key) == lww(b"v2", 2), key
        c = cache.counters()
        assert (c["fetches"], c["lease_fills"], c["hits"], c["direct"]) == (20, 20, 20, 0)
    finally:
        other.close()
        ex.close()


def test_write_in_the_announcement_gap_of_a_leased_read_reaches_the_cache(
        tmp_path, kvs, anna):
    cache = CacheDaemon(tmp_path, kvs, extra=["--keyset-interval-ms", "1500"]).start()
    client = _squall.CacheClient(str(cache.dir), timeout=10.0)
    try:
        anna.put_lww("first", b"x", 1)
        client.get("first")
        wait_for(lambda: "first" in (keyset(anna, cache) or set()), what="a key-set report")
        anna.put_lww("gap", b"v1", 1)
        t0 = time.monotonic()
        assert client.get("gap")[2] == lww(b"v1", 1)
        assert anna.put_lww("gap", b"v2", 2).error == PB.NO_ERROR
        assert time.monotonic() - t0 < 1.0, "too slow to land inside the gap"
        wait_for(lambda: cached_payload(cache, "gap") == lww(b"v2", 2),
                 what="refetch after the announcement")
        c = cache.counters()
        assert c["refetches"] >= 1 and c["updates"] == 0 and c["lease_fills"] == 2
    finally:
        client.close()
        assert cache.stop() == 0


def test_large_value_is_answered_once_stored_and_then_goes_through_the_daemon(
        tmp_path, kvs, anna):
    cache = CacheDaemon(tmp_path, kvs, budget="3M").start()  # holds one 2 MiB value
    client = _squall.CacheClient(str(cache.dir), timeout=10.0)
    big = {k: lww(os.urandom(2 << 20), 1) for k in ("big", "big2")}
    try:
        for k, v in big.items():
            anna.put(k, PB.LWW, v)
            # never seen: leased, handed over, answered once stored (read zero copy)
            assert client.get(k) == (0, PB.LWW, None)
            assert cached_payload(cache, k) == v
        assert not cache.peek("big")["big"]["found"]  # evicted by big2
        assert client.get("big") == (0, PB.LWW, None)  # the daemon stored it first
        assert cached_payload(cache, "big") == big["big"]
        c = cache.counters()
        assert (c["lease_fills"], c["fetches"], c["direct"]) == (2, 3, 0)
    finally:
        client.close()
        assert cache.stop() == 0


def test_restarted_daemon_rebuilds_the_table_and_leased_misses_go_on(anna, cache, client):
    anna.put_lww("before", b"b", 1)
    assert client.get("before")[2] == lww(b"b", 1)
    assert cache.stop() == 0
    cache.start()
    # The same mapping, reset in place: leased misses go on at once. A hand-over is
    # never waited for, so one sent before the client reconnected to the new daemon
    # is lost (the next miss of the key reads the KVS again); within a moment one
    # lands and is stored.
    deadline = time.monotonic() + 5
    for i in range(1000):
        key = f"after{i}"
        anna.put_lww(key, b"a", 1)
        assert client.get(key)[2] == lww(b"a", 1)
        time.sleep(0.1)
        if cached_payload(cache, key) == lww(b"a", 1) or time.monotonic() > deadline:
            break
    assert cached_payload(cache, key) == lww(b"a", 1)
    assert cache.counters()["lease_fills"] >= 1
