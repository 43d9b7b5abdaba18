"""The calling process's view of its node cache: ``squall.get`` zero copy, like an executor.

A client on a node that runs squall-cache (every local cluster ``squall.init()`` starts
or reuses) reads values the way executors do (``NodeCache``): the key is looked up in
the cache's LMDB, and a NumPy array comes back as a read-only view of the shared
mapping -- no byte copied, no network hop. A miss asks the daemon, which fetches the
value from the KVS and keeps it, so the next read, here or on any executor of the node,
is a hit. When the cache cannot answer (daemon down or slow, an entry it does not
decode) ``lookup`` says so and the caller reads the KVS as before.

Writes by this process to keys it may read back (``write``) go through the daemon,
which answers after the KVS acknowledged and updates its copy first, so a read here
never returns an older cached value than the process's own last write. ``squall.put``
writes fresh keys that are never overwritten straight to the KVS: nothing cached can be
stale for them.

Which clusters: only a local cluster whose state names a running cache (its directory
is on this machine); a cluster reached with ``squall.init(address=...)`` is read
through the KVS.

Threads: a ``NodeCache`` serves one thread, so each thread gets its own (one LMDB
reader slot and one ipc socket per thread), made on first use and dropped with the
cluster handle.

Example:

    >>> found, value = lookup(squall.init(), ref.key)   # doctest: +SKIP
    >>> found, value.flags.writeable                    # doctest: +SKIP
    (True, False)
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Optional, Tuple

from ._nodecache import FALLBACK, NodeCache

#: ``lookup`` could not use the cache: read the KVS instead.
UNAVAILABLE = FALLBACK

_local = threading.local()


def cache_dir_of(cluster: Any) -> Optional[str]:
    """The node cache directory of ``cluster`` when this process can read it, else None."""
    st = getattr(cluster, "state", None) or {}
    if cluster.home is None or "cache" not in st.get("daemons", {}):
        return None
    return st.get("cache_dir") or None


def _node_cache(cluster: Any) -> Optional[NodeCache]:
    """This thread's NodeCache for ``cluster`` (None when the cluster has no local cache)."""
    held = getattr(_local, "held", None)
    if held is not None and held[0]() is cluster:
        return held[1]
    directory = cache_dir_of(cluster)
    if directory is None:
        return None
    cache = NodeCache(directory)
    _local.held = (weakref.ref(cluster), cache)
    return cache


def lookup(cluster: Any, key: str) -> Tuple[bool, Any]:
    """``(True, value)`` from the node cache (arrays zero copy, read-only), ``(False,
    None)`` when the KVS has no such key, ``(True, UNAVAILABLE)`` when the cache cannot
    answer (no cache on this node, daemon down, undecodable entry): read the KVS."""
    cache = _node_cache(cluster)
    if cache is None:
        return True, UNAVAILABLE
    found, value = cache.get(key)
    cache.between_calls()  # hit reports for LRU; unmaps idle evicted segments
    return found, value


def write(cluster: Any, key: str, lattice_type: int, payload: bytes) -> bool:
    """Writes through the node cache: True once the KVS acknowledged; False when there
    is no cache or the daemon did not answer (write to the KVS directly).
    RuntimeError when the write was refused (e.g. another lattice type is stored)."""
    cache = _node_cache(cluster)
    return cache is not None and cache.put(key, lattice_type, payload)


def store(cluster: Any, key: str, lattice_type: int, payload: bytes) -> None:
    """Writes ``key`` so that this process reads it back: through the node cache when
    there is one (``write``), else straight to the KVS. Raises what the KVS raises."""
    if not write(cluster, key, lattice_type, payload):
        cluster.kvs.put(key, lattice_type, payload)
