"""An executor's view of its node cache (squall-cache): reads, misses, writes, hit reports.

``NodeCache(dir)`` is made once per executor when squall-worker runs with
``--cache-dir``. ``get(key)`` reads the cache's LMDB directly (``CacheReader``): a
squall object comes back zero copy (NumPy arrays are read-only views of the shared
mapping); a raw lattice payload (a value someone stored without squall's blob format)
is decoded as the KVS path decodes it. A key that is not cached is asked of the daemon
(``CacheClient.fetch``, a GET over ipc with a timeout), then read again. When the daemon
does not answer, ``get`` returns ``FALLBACK`` and the caller reads the KVS itself; the
daemon is then left alone for ``DOWN_SECONDS`` (a dead daemon costs one short timeout,
not one per key). ``put`` writes through the daemon, which answers once the KVS
acknowledged, so the cache never shows a write the KVS could lose.

Hits that never reached the daemon are reported to it for LRU (``CacheClient.report``,
no reply, dropped when the daemon is busy or gone) in batches: every ``REPORT_BATCH``
keys or ``REPORT_SECONDS``, whichever comes first, and from ``between_calls``, which
also unmaps idle mappings of evicted segments (``CacheReader.trim``).

Threads: the executor thread only (the reader and client are not shared).

Example (inside an executor)::

    cache = NodeCache("/dev/shm/squall-x-0")
    found, value = cache.get("weights")      # (True, <read-only array>) on a hit
"""
from __future__ import annotations

import time
from typing import Any, Callable, List, Optional, Tuple

from . import _squall
from ._serialize import load_value

LWW, SET, ORDERED_SET = 1, 2, 5
KEY_DNE = 1

#: get() could not use the cache for this key: read the KVS instead.
FALLBACK = object()


class NodeCache:
    """Zero-copy reads of the node cache with the daemon behind it (module docstring)."""

    REPORT_BATCH = 256
    REPORT_SECONDS = 0.5
    DOWN_SECONDS = 2.0

    def __init__(self, directory: str, fetch_timeout: float = 5.0,
                 log: Optional[Callable[[str], None]] = None) -> None:
        self.dir = directory
        self.fetch_timeout = fetch_timeout
        self._log = log or (lambda _msg: None)
        self._reader: Any = None
        self._client: Any = None
        self._hits: List[str] = []
        self._last_report = time.monotonic()
        self._down_until = 0.0
        #: hits (LMDB), fetches (daemon asked), fallbacks (KVS read instead), puts
        self.stats = {"hits": 0, "fetches": 0, "fallbacks": 0, "puts": 0}
        self._open()

    def _open(self) -> bool:
        """Opens the reader and client when not open yet; False when the cache
        directory is not usable (yet): the daemon may still be starting."""
        try:
            if self._client is None:
                self._client = _squall.CacheClient(self.dir, timeout=self.fetch_timeout)
            if self._reader is None:
                self._reader = _squall.CacheReader(self.dir)
            return True
        except Exception as e:  # noqa: BLE001 -- no cache is never fatal: KVS only
            self._log(f"node cache {self.dir} not usable yet: {e}")
            return False

    # -- reads -----------------------------------------------------------------------
    def _read(self, key: str) -> Tuple[bool, Any]:
        """(True, value) from LMDB, (False, None) when not cached, FALLBACK pair for
        values this reader does not decode."""
        try:
            return True, self._reader.get(key)
        except KeyError:
            return False, None
        except ValueError:  # a raw lattice payload: decode it as the KVS path does
            ltype, _meta, stream, _bufs = self._reader.lookup(key)
            if ltype == LWW:
                return True, load_value(_squall.decode_lww(stream)[1])
            if ltype in (SET, ORDERED_SET):
                return True, [load_value(v) for v in _squall.decode_set(stream)]
            return True, FALLBACK

    def get(self, key: str) -> Tuple[bool, Any]:
        """(True, value) when key is cached or the daemon fetched it, (False, None)
        when the daemon says the KVS has no such key, (True, FALLBACK) when the cache
        cannot answer (daemon down or slow, unreadable entry): read the KVS."""
        if self._reader is None and not self._open():
            return self._fallback()
        try:
            found, value = self._read(key)
        except Exception as e:  # noqa: BLE001 -- a damaged entry: the KVS has the truth
            self._log(f"node cache read of {key!r} failed: {e}")
            return self._fallback()
        if found:
            self.stats["hits"] += 1
            self._hit(key)
            return (True, value) if value is not FALLBACK else self._fallback()
        if time.monotonic() < self._down_until:
            return self._fallback()
        try:
            self.stats["fetches"] += 1
            err = self._client.fetch([key]).get(key, 0)
        except Exception as e:  # noqa: BLE001 -- timeout or closed: never hang on it
            self._log(f"squall-cache did not serve {key!r} ({e}); reading the KVS")
            self._down_until = time.monotonic() + self.DOWN_SECONDS
            return self._fallback()
        if err == KEY_DNE:
            return False, None
        found, value = self._read(key) if err == 0 else (False, None)
        return (True, value) if found and value is not FALLBACK else self._fallback()

    def _fallback(self) -> Tuple[bool, Any]:
        self.stats["fallbacks"] += 1
        return True, FALLBACK

    # -- writes ----------------------------------------------------------------------
    def put(self, key: str, lattice_type: int, payload: bytes) -> bool:
        """Writes through the daemon: True once the KVS acknowledged, False when the
        daemon did not answer (write to the KVS directly). RuntimeError when the
        write was refused (e.g. the key holds another lattice type)."""
        if self._client is None and not self._open():
            return False
        if time.monotonic() < self._down_until:
            return False
        try:
            err = self._client.put(key, lattice_type, payload)
        except Exception as e:  # noqa: BLE001
            self._log(f"squall-cache did not take the write of {key!r} ({e})")
            self._down_until = time.monotonic() + self.DOWN_SECONDS
            return False
        if err != 0:
            raise RuntimeError(f"put of {key!r} refused (AnnaError {err})")
        self.stats["puts"] += 1
        return True

    # -- LRU reports and housekeeping ------------------------------------------------
    def _hit(self, key: str) -> None:
        self._hits.append(key)
        if len(self._hits) >= self.REPORT_BATCH or \
                time.monotonic() - self._last_report >= self.REPORT_SECONDS:
            self.flush_hits()

    def flush_hits(self) -> None:
        """Sends the pending hit report now (non-blocking; lost if the daemon is busy)."""
        self._last_report = time.monotonic()
        if not self._hits or self._client is None:
            return
        keys, self._hits = sorted(set(self._hits)), []
        try:
            self._client.report(keys)
        except Exception:  # noqa: BLE001 -- a lost report only makes LRU less exact
            pass

    def between_calls(self) -> None:
        """After each call: report hits when due, unmap idle evicted segments."""
        if self._hits and time.monotonic() - self._last_report >= self.REPORT_SECONDS:
            self.flush_hits()
        if self._reader is not None:
            self._reader.trim()
