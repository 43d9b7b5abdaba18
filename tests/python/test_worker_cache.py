"""Executors resolve references through the node cache, zero copy: real squall-kvs,
squall-cache and squall-worker --cache-dir, executors driven on their ports.

Pins: a 50 MB array arrives read-only, inside the cache's segment mapping, one
mapping for two references to the same key; the second call is a hit (no new daemon
fetch) and hits are reported for LRU; raw (non-blob) values decode as before; the
user library reads through the cache and writes through the daemon; a value updated
in the KVS is seen by the next call (pushed update); with the daemon down, calls fall
back to the KVS without hanging. Plus the storage form of squall.put (blobs for
arrays and large objects, cloudpickle otherwise) and that squall.get reads both.
"""
from __future__ import annotations

import signal
import time
import uuid

import numpy as np
import pytest

from kvs_harness import KvsNode
from test_cache_daemon import CacheDaemon, keyset, wait_for
from worker_harness import ExecClient, WorkerNode, is_error

from squall import Ref
from squall._serialize import DEFAULT, decode_value, dump, dump_object, encode_value, load

MB50 = 50 * 1000 * 1000 // 8  # float64 elements of a 50 MB array


class Cluster:
    def __init__(self, kvs, cache, worker, client):
        self.kvs, self.cache, self.worker, self.client = kvs, cache, worker, client

    def put_object(self, key: str, value) -> None:
        """Stores value as squall.put does (dump_object: blobs for arrays)."""
        self.client.anna.put_lww(key, encode_value(*dump_object(value)), time.time_ns())


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    d = tmp_path_factory.mktemp("wcache")
    kvs = KvsNode(d / "kvs", threads=1, durability="none").start()
    cache = worker = client = None
    try:
        cache = CacheDaemon(d, kvs, budget="512M").start()
        worker = WorkerNode(kvs, d, executors=1,
                            extra=["--function-ttl-ms", "0", "--cache-dir", str(cache.dir)])
        worker.start()
        client = ExecClient(worker)
        yield Cluster(kvs, cache, worker, client)
    finally:
        if client:
            client.close()
        if worker:
            worker.stop()
        if cache:
            cache.stop()
        kvs.stop()


def inspect(lib, a, b):
    """Runs in the executor: how the two resolved arrays are backed."""
    import numpy as np
    lo = a.__array_interface__["data"][0]
    hi = lo + a.nbytes
    backing = ""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if start <= lo and hi <= end:
                backing = parts[-1] if len(parts) >= 6 else ""
    return (bool(a.flags.writeable), bool(np.shares_memory(a, b)), backing,
            float(a[12345]), a.shape, a.__array_interface__["data"][0] % 64)


def test_big_array_reference_is_read_only_view_of_cache_mapping(cl):
    key = "big-" + uuid.uuid4().hex
    arr = np.arange(MB50, dtype=np.float64)
    cl.put_object(key, arr)
    before = cl.cache.counters()
    cl.client.register("inspect", inspect)
    res = cl.client.run("inspect", Ref(key), Ref(key), timeout=60)
    assert not is_error(res), res
    writeable, shared, backing, item, shape, align = res
    assert writeable is False
    assert shared is True  # two references to one key: one mapping, no copy
    assert "/segments/" in backing and str(cl.cache.dir) in backing
    assert item == 12345.0 and shape == (MB50,) and align == 0
    after = cl.cache.counters()
    assert after["fetches"] == before["fetches"] + 1  # both refs: one fetch


def test_second_call_hits_without_daemon_fetch_and_reports_hits(cl):
    key = "hit-" + uuid.uuid4().hex
    cl.put_object(key, np.full(100_000, 7, dtype=np.int32))
    cl.client.register("total", lambda lib, a: int(a.sum()))
    assert cl.client.run("total", Ref(key)) == 700_000
    # a leased miss hands the value over after the call returned: counted once stored
    wait_for(lambda: cl.cache.peek(key)[key]["found"], 10, "the miss's value stored")
    first = cl.cache.counters()
    time.sleep(0.6)  # past the report interval: the next call sends its hit report
    assert cl.client.run("total", Ref(key)) == 700_000
    assert cl.client.run("total", Ref(key)) == 700_000
    second = cl.cache.counters()
    assert second["fetches"] == first["fetches"] and second["misses"] == first["misses"]
    wait_for(lambda: cl.cache.counters()["touches"] > first["touches"], 10,
             "a hit report reaching the daemon")


def test_raw_values_in_cache_decode_as_before(cl):
    key = "raw-" + uuid.uuid4().hex
    cl.client.put_value(key, {"a": [1, 2, 3]})  # plain cloudpickle Value: stored RAW
    cl.client.register("echo", lambda lib, x: x)
    assert cl.client.run("echo", Ref(key)) == {"a": [1, 2, 3]}
    assert cl.cache.peek(key)[key].get("found", True)
    before = cl.cache.counters()
    assert cl.client.run("echo", Ref(key)) == {"a": [1, 2, 3]}
    assert cl.cache.counters()["fetches"] == before["fetches"]


def test_missing_reference_fails_after_ref_timeout_not_hang(cl):
    cl.client.register("echo", lambda lib, x: x)
    res = cl.client.run("echo", Ref("never-" + uuid.uuid4().hex), timeout=30)
    assert is_error(res) and "does not exist" in res[0]


def test_user_library_reads_through_cache_and_writes_through_daemon(cl):
    src, dst = "lsrc-" + uuid.uuid4().hex, "ldst-" + uuid.uuid4().hex
    cl.put_object(src, np.arange(50_000, dtype=np.int64))

    def copy(lib, s, d):
        a = lib.get(s)
        lib.put(d, a * 2)
        return bool(a.flags.writeable), int(lib.get(d)[3])

    cl.client.register("copy", copy)
    before = cl.cache.counters()
    assert cl.client.run("copy", src, dst) == (False, 6)
    after = cl.cache.counters()
    assert after["puts"] == before["puts"] + 1  # through the daemon, acked by the KVS
    got = cl.client.anna.get_lww(dst)
    assert got is not None
    kind, body = decode_value(got[1])
    assert body[:4] == b"SQOB"  # large object stored as a blob
    assert int(load(kind, body)[3]) == 6


def test_user_library_put_without_waiting_returns_before_the_kvs_acknowledged(cl, tmp_path):
    key, mark = "async-" + uuid.uuid4().hex, tmp_path / "returned"

    def aput(lib, k, path, kvs_pid):
        import os
        import signal as sig
        os.kill(kvs_pid, sig.SIGSTOP)  # from here on no acknowledgement can come back
        done = lib.put(k, np.arange(4, dtype=np.int64), wait=False)
        with open(path, "w") as f:  # seen by the test while the KVS is still stopped
            f.write(str(done))
        return done

    cl.client.register("aput", aput)
    try:
        key_call = cl.client.call("aput", key, str(mark), cl.kvs.proc.pid)
        wait_for(mark.exists, 4, "the put(wait=False) to return with the KVS stopped")
        assert mark.read_text() == "True"
    finally:
        cl.kvs.proc.send_signal(signal.SIGCONT)
    assert cl.client.get_result(key_call, 30) is True
    wait_for(lambda: cl.client.anna.get_lww(key) is not None, 15, "the write in the KVS")
    kind, body = decode_value(cl.client.anna.get_lww(key)[1])
    assert list(load(kind, body)) == [0, 1, 2, 3]


def test_updated_value_is_seen_by_next_call(cl):
    key = "upd-" + uuid.uuid4().hex
    cl.put_object(key, np.array([1.0, 2.0]))
    cl.client.register("first", lambda lib, a: float(a[0]))
    assert cl.client.run("first", Ref(key)) == 1.0
    wait_for(lambda: key in (keyset(cl.client.anna, cl.cache) or set()), 10,
             "the key-set report naming the key")
    time.sleep(0.3)  # the owning KVS worker learns the key set from the metadata key
    cl.put_object(key, np.array([9.0, 2.0]))  # the KVS pushes it to the daemon
    wait_for(lambda: cl.client.run("first", Ref(key)) == 9.0, 15, "the pushed update")
    assert cl.cache.counters()["updates"] >= 1


def test_zz_daemon_down_falls_back_to_kvs(cl):
    """Last in the module: stops the daemon."""
    cached = "down-c-" + uuid.uuid4().hex
    cl.put_object(cached, np.arange(10))
    cl.client.register("sum", lambda lib, a: int(np.asarray(a).sum()))
    assert cl.client.run("sum", Ref(cached)) == 45
    assert cl.cache.stop() == 0
    fresh = "down-f-" + uuid.uuid4().hex
    cl.put_object(fresh, np.arange(5))
    t0 = time.monotonic()
    assert cl.client.run("sum", Ref(fresh), timeout=20) == 10
    assert cl.client.run("sum", Ref(cached), timeout=20) == 45
    fresh2 = "down-g-" + uuid.uuid4().hex
    cl.put_object(fresh2, np.arange(4))
    assert cl.client.run("sum", Ref(fresh2), timeout=20) == 6
    assert time.monotonic() - t0 < 10

    def put_one(lib, k):
        return lib.put(k, [1, 2])

    out = "down-p-" + uuid.uuid4().hex
    cl.client.register("put_one", put_one)
    assert cl.client.run("put_one", out, timeout=20) is True
    assert load(*decode_value(cl.client.anna.get_lww(out)[1])) == [1, 2]


# ---- the storage form of squall.put (no daemons) -----------------------------------

def test_dump_object_uses_blobs_for_arrays_and_large_objects_only():
    kind, body = dump_object(np.arange(3))
    assert kind == DEFAULT and body[:4] == b"SQOB"
    a = load(kind, body)
    assert a.tolist() == [0, 1, 2] and not a.flags.writeable
    big = {"w": list(range(30_000))}
    kind, body = dump_object(big)
    assert body[:4] == b"SQOB" and load(kind, body) == big
    small = {"x": 1}
    assert dump_object(small) == dump(small)
    assert dump_object("s") == dump("s") and dump_object(b"b") == dump(b"b")


class Local:  # a class pickled by reference would not load in an executor ...
    def __init__(self):
        self.payload = list(range(30_000))


def test_dump_object_keeps_cloudpickle_for_main_module_objects(monkeypatch):
    monkeypatch.setattr(Local, "__module__", "__main__")  # ... when defined in __main__
    import __main__
    monkeypatch.setattr(__main__, "Local", Local, raising=False)
    kind, body = dump_object(Local())
    assert body[:4] != b"SQOB"


def test_raw_bytes_that_look_like_a_blob_stay_bytes():
    assert load(DEFAULT, b"SQOB not a blob at all") == b"SQOB not a blob at all"
