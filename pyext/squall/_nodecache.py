"""An executor's view of its node cache (squall-cache): reads, misses, writes, hit reports.

``NodeCache(dir)`` is made once per executor when squall-worker runs with
``--cache-dir``. ``get(key)`` reads the cache's LMDB directly (``CacheReader``): a
squall object comes back zero copy (NumPy arrays are read-only views of the shared
mapping); a raw lattice payload (a value someone stored without squall's blob format)
is decoded as the KVS path decodes it. A key that is not cached is asked of the daemon
(``CacheClient.get``): under the key's fetch lease (docs/cache.md "Fetch leases") the
executor reads the KVS itself, decodes the value from those bytes and hands them to
the daemon, which stores them for the next reader; a key another executor is
fetching is waited for and then read from the cache; otherwise (``leases=False``,
no lease table, a key known to be large) the daemon is asked (a GET over its unix
socket, else ZeroMQ ipc, with a timeout): a value up to 1 MiB comes back with the
answer -- straight from the KVS (a direct miss: the daemon coalesced it and started
the fetch, the executor hands the bytes back to it) or inline from the daemon -- and
is decoded from those bytes; otherwise it is read from the cache once the daemon
answers. When the daemon
does not answer, ``get`` returns ``FALLBACK`` and the caller reads the KVS itself; the
daemon is then left alone for ``DOWN_SECONDS`` (a dead daemon costs one short timeout,
not one per key). ``put`` writes through the daemon, which answers once the KVS
acknowledged, so the cache never shows a write the KVS could lose; ``put(...,
wait=False)`` is the opt-in asynchronous form: it returns once the daemon has the
write queued, before the KVS acknowledged it (see ``put``).

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
from ._blob import loads_blob
from ._serialize import DEFAULT, _read_varint, load, load_value

LWW, SET, ORDERED_SET = 1, 2, 5
KEY_DNE = 1

#: get() could not use the cache for this key: read the KVS instead.
FALLBACK = object()

_BLOB_MAGIC = b"SQOB"


def _fields(buf: memoryview) -> dict:
    """{field number: memoryview or int} of a protobuf message's top-level fields
    (the last of each wins), without copying. ValueError when malformed."""
    out: dict = {}
    i, n = 0, len(buf)
    while i < n:
        tag, i = _read_varint(buf, i)
        wire = tag & 7
        if wire == 0:
            out[tag >> 3], i = _read_varint(buf, i)
        elif wire == 2:
            size, i = _read_varint(buf, i)
            if size > n - i:
                raise ValueError("a field runs past the end of the message")
            out[tag >> 3], i = buf[i:i + size], i + size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if i != n:
        raise ValueError("a field runs past the end of the message")
    return out


def _load_lww(payload: bytes) -> Any:
    """The object of an LWWValue{value = Value{body, type}} payload. A blob body is
    loaded over the payload's own memory (arrays are views of it, no copy); other
    bodies as load_value does."""
    value = _fields(memoryview(payload)).get(2, b"")
    fields = _fields(memoryview(value))
    kind, body = fields.get(2, DEFAULT), fields.get(1, b"")
    if kind == DEFAULT and bytes(body[:4]) == _BLOB_MAGIC:
        try:
            return loads_blob(body)
        except Exception:  # noqa: BLE001 -- raw bytes that merely start alike
            pass
    return load(kind, bytes(body))


class NodeCache:
    """Zero-copy reads of the node cache with the daemon behind it (module docstring)."""

    REPORT_BATCH = 256
    REPORT_SECONDS = 0.5
    DOWN_SECONDS = 2.0

    def __init__(self, directory: str, fetch_timeout: float = 5.0,
                 log: Optional[Callable[[str], None]] = None, leases: bool = True) -> None:
        self.dir = directory
        self.leases = leases
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
                self._client = _squall.CacheClient(self.dir, timeout=self.fetch_timeout,
                                                   leases=self.leases)
            if self._reader is None:
                self._reader = _squall.CacheReader(self.dir)
            return True
        except Exception as e:  # noqa: BLE001 -- no cache is never fatal: KVS only
            self._log(f"node cache {self.dir} not usable yet: {e}")
            return False

    # -- reads -----------------------------------------------------------------------
    @staticmethod
    def _decode(ltype: int, payload: bytes) -> Any:
        """A lattice payload decoded as the KVS path decodes it; FALLBACK for lattice
        types this reader does not decode."""
        if ltype == LWW:
            return _load_lww(payload)
        if ltype in (SET, ORDERED_SET):
            return [load_value(v) for v in _squall.decode_set(payload)]
        return FALLBACK

    def _read(self, key: str) -> Tuple[bool, Any]:
        """(True, value) from LMDB, (False, None) when not cached, FALLBACK pair for
        values this reader does not decode."""
        try:
            return True, self._reader.get(key)
        except KeyError:
            return False, None
        except ValueError:  # a raw lattice payload: decode it as the KVS path does
            ltype, _meta, stream, _bufs = self._reader.lookup(key)
            return True, self._decode(ltype, stream)

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
            err, ltype, payload = self._client.get(key)
        except Exception as e:  # noqa: BLE001 -- timeout or closed: never hang on it
            self._log(f"squall-cache did not serve {key!r} ({e}); reading the KVS")
            self._down_until = time.monotonic() + self.DOWN_SECONDS
            return self._fallback()
        if err == KEY_DNE:
            return False, None
        if err != 0:
            return self._fallback()
        try:  # inline (a small value the daemon just fetched), else from LMDB
            found, value = (True, self._decode(ltype, payload)) if payload is not None \
                else self._read(key)
        except Exception as e:  # noqa: BLE001 -- undecodable: the KVS has the truth
            self._log(f"node cache value of {key!r} unreadable: {e}")
            return self._fallback()
        return (True, value) if found and value is not FALLBACK else self._fallback()

    def _fallback(self) -> Tuple[bool, Any]:
        self.stats["fallbacks"] += 1
        return True, FALLBACK

    # -- writes ----------------------------------------------------------------------
    def put(self, key: str, lattice_type: int, payload: bytes, wait: bool = True) -> bool:
        """Writes through the daemon: True once the KVS acknowledged, False when the
        daemon did not answer (write to the KVS directly). RuntimeError when the
        write was refused (e.g. the key holds another lattice type).

        ``wait=False`` (opt-in, asynchronous): True as soon as the daemon's queue took
        the write, BEFORE the KVS acknowledged it. The write is then not yet durable,
        a read right after may still see the old value (the cache merges the write
        when the KVS acks it), and a write the daemon or the KVS refuses or loses is
        only logged and counted by the daemon (``put_errors``), never raised here."""
        if self._client is None and not self._open():
            return False
        if time.monotonic() < self._down_until:
            return False
        try:
            err = self._client.put(key, lattice_type, payload, wait=wait)
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

    def close(self) -> None:
        """Sends pending hit reports, closes the daemon client and the reader. Values
        already returned stay valid (their mappings go when they are released)."""
        self.flush_hits()
        for obj in (self._client, self._reader):
            if obj is not None:
                obj.close()
        self._client = self._reader = None
