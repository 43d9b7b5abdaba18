"""squall.get through the node cache in the client process (issue 6, transport): on a
local cluster a stored array comes back zero copy as a read-only view of the cache's
shared mapping, misses are fetched into the cache once, sets read as lists, missing keys
raise KeyNotFoundError, a cluster reached by address is read through the KVS, and a dead
cache daemon only means reads go to the KVS.
"""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import squall
from squall import _cluster, _clientcache
from kvs_harness import bin_dir
from test_cluster import cluster_offset

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("clientcache") / "home"
    saved = os.environ.get("SQUALL_BIN_DIR")
    os.environ.setdefault("SQUALL_BIN_DIR", str(bin_dir()))
    try:
        yield squall.init(home=home, port_offset=cluster_offset(), executors=1, timeout=90)
    finally:
        squall.shutdown()
        _cluster.down(home, grace=5.0)
        if saved is None:
            os.environ.pop("SQUALL_BIN_DIR", None)


def test_local_cluster_reads_arrays_zero_copy_from_the_node_cache(cluster):
    a = np.arange(1 << 20, dtype=np.float64)  # 8 MiB: a segment of its own
    ref = squall.put(a)
    first, second = squall.get(ref), squall.get(ref)
    assert np.array_equal(first, a)
    assert not first.flags.writeable  # a view of the shared mapping, not a private copy
    assert np.shares_memory(first, second)  # both reads are the same bytes: no copy
    assert first.ctypes.data % 64 == 0


def test_small_values_and_strings_round_trip_through_the_cache(cluster):
    for value in ("hello", b"raw", {"a": [1, 2.5, None]}, np.ones(3)):
        back = squall.get(squall.put(value))
        if isinstance(value, np.ndarray):
            assert np.array_equal(back, value)
        else:
            assert back == value


def test_missing_key_raises_key_not_found_through_the_cache(cluster):
    with pytest.raises(squall.KeyNotFoundError) as info:
        squall.get("no-such-key-anywhere")
    assert isinstance(info.value, KeyError)
    assert "no-such-key-anywhere" in str(info.value)


def test_set_valued_key_reads_as_its_elements(cluster):
    from squall import _serialize
    members = sorted(_serialize.encode_value(*_serialize.dump(v)) for v in ("x", "y"))
    cluster.kvs.put("a-set", squall.LatticeType.SET, squall.encode_set(members))
    assert sorted(squall.get("a-set")) == ["x", "y"]


def test_cluster_reached_by_address_reads_through_the_kvs(cluster):
    remote = _cluster.Cluster(cluster.routing, cluster.host, cluster.port_offset,
                              cluster.scheduler, None, False, cluster.kvs, {})
    assert _clientcache.cache_dir_of(remote) is None
    assert _clientcache.lookup(remote, "anything") == (True, _clientcache.UNAVAILABLE)


def test_writes_of_this_process_are_read_back_not_an_older_cached_value(cluster):
    from squall.compat import CloudburstConnection
    lib = squall.context()  # the local stand-in outside an executor
    lib.put("rw-key", "first")
    assert squall.get("rw-key") == "first"  # now cached on this node
    for n in range(20):  # each overwrite is seen at once, never the cached old value
        lib.put("rw-key", f"v{n}")
        assert squall.get("rw-key") == f"v{n}"
    conn = CloudburstConnection("127.0.0.1", "127.0.0.1")
    conn.put_object("rw-key", "from compat")
    assert squall.get("rw-key") == "from compat"
    assert conn.get_object("rw-key") == "from compat"


# last: it kills the module cluster's cache daemon
def test_reads_fall_back_to_the_kvs_when_the_cache_daemon_is_gone(cluster):
    pid = cluster.state["daemons"]["cache"]["pid"]
    ref = squall.put(np.arange(100, dtype=np.int64))
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _cluster.pid_alive(pid, None) and time.monotonic() < deadline:
        time.sleep(0.05)
    start = time.monotonic()
    assert np.array_equal(squall.get(ref), np.arange(100))
    assert time.monotonic() - start < 30  # one short timeout, then the KVS
    assert squall.get(squall.put("after")) == "after"
