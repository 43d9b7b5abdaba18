"""The Python half of a squall executor: functions, arguments, the user library.

The C executor (worker/exec_*.c) embeds CPython, imports this module once and makes one
``Executor``. Its executor thread calls ``Executor.run(name, args, reply_to)`` for every
one-shot call and DAG function (``reply_to``: the caller's response address, or ""),
and ``Executor.pin(name)`` when a scheduler pins a function; it routes the results
itself. Everything that reaches the network or the KVS goes through
the built-in C module ``_squall_exec`` (which releases the GIL while it waits).

Functions are fetched from the KVS key ``funcs/<name>`` once and kept. A kept function
is trusted for ``function_ttl`` seconds; after that the next call re-reads the key and
compares its LWW timestamp, so a re-registration is picked up within that time (a GET
per call would cost a KVS round trip on the hot path; a cached function costs none).
A registration ``(cls, init_args)`` makes ``cls(user_library, *init_args)`` once and
calls its ``run`` method (a non-tuple ``init_args`` is one argument -- Cloudburst
crashed on it).

Results: ``run`` returns ``(ok, (type, body), parts)`` where ``parts`` is one
``(type, body)`` per element when the result is a tuple (for DAG triggers), else None.
A failure is the Cloudburst-shaped tuple ``('ERROR: <message>', GenericResponse bytes)``
whose GenericResponse carries the exception type, message, traceback and executor.

Output: a call whose first argument is a ``CallMeta`` (squall's own client sends one)
has it removed, and its stdout, stderr and logging records are captured and sent
before ``run`` returns, i.e. before the result (squall/_callmeta.py): pushed to
``reply_to`` as a Value whose response_id is ``CallMeta.out_key`` when the caller gave a
response address (the same socket, queued ahead of the result), else stored at
``out_key`` in the KVS.
"""
from __future__ import annotations

import io
import logging
import os
import pickle
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

import _squall_exec as _x  # built into the squall-worker binary

from . import _reference, _squall
from ._callmeta import MAX_OUTPUT_CHARS, CallMeta
from ._nodecache import FALLBACK, NodeCache
from ._serialize import (DEFAULT, PLAIN_TYPES, dump, dump_object, encode_value, load,
                         load_value)

FUNC_NOT_FOUND = 1
EXECUTION_ERROR = 3
LWW, SET, ORDERED_SET = 1, 2, 5

Pair = Tuple[int, bytes]


class FunctionNotFound(LookupError):
    """No function of that name is registered (no ``funcs/<name>`` key)."""


def _load_lattice(got: Tuple[int, int, Any], deserialize: bool = True) -> Any:
    kind, _ts, value = got
    if kind == LWW:
        return load_value(value) if deserialize else value
    return [load_value(v) if deserialize else v for v in value]


class UserLibrary:
    """The first argument of every function (Cloudburst's ``user_library``).

    Example (inside a registered function)::

        def f(lib, key):
            lib.put(key + "-copy", lib.get(key))
            lib.send(peer_id, b"hello")
            return [m for _sender, m in lib.recv()]
    """

    def __init__(self, cache: Optional[NodeCache] = None) -> None:
        ip, tid = _x.identity()
        self._id = (ip, tid)
        self._cache = cache  # the node cache (squall-worker --cache-dir), or None

    def put(self, key: str, value: Any, wait: bool = True) -> bool:
        """Stores value under key: a Python set as a SET lattice, else LWW. True when
        the KVS acknowledged it; raises RuntimeError (with the reason) otherwise.

        ``wait=False`` (opt-in, asynchronous; LWW values through the node cache): returns
        as soon as the node's cache daemon queued the write, before the KVS acknowledged
        it -- not yet durable, a read right after may still see the old value, and a
        refused write is only logged by the daemon. Without a usable cache the write is
        synchronous as usual."""
        if isinstance(value, set):
            _x.kvs_put_set(key, sorted({encode_value(*dump(v)) for v in value}))
            return True
        body = encode_value(*dump_object(value))
        if self._cache is not None:  # write-through: the cache sees it once durable
            # one LWW scale for every squall writer (docs/lattices.md): id folded to a digit
            payload = _squall.encode_lww(_squall.lww_timestamp(self._id[1] % 10), body)
            if self._cache.put(key, LWW, payload, wait=wait):
                return True
        _x.kvs_put(key, body)
        return True

    def get(self, key: Any, deserialize: bool = True) -> Any:
        """The value of key (None when missing), or a dict for a list of keys.
        deserialize=False gives the stored bytes (a serialized Value) untouched."""
        if isinstance(key, (list, tuple)):
            return {k: self.get(k, deserialize) for k in key}
        if self._cache is not None and deserialize:
            found, value = self._cache.get(key)
            if value is not FALLBACK:
                return value if found else None
        got = _x.kvs_get(key)
        return None if got is None else _load_lattice(got, deserialize)

    def getid(self) -> Tuple[str, int]:
        """(ip, tid): this executor's messaging identity."""
        return self._id

    def send(self, dest: Tuple[str, int], data: bytes) -> None:
        """Sends bytes to the executor dest = (ip, tid); no acknowledgement."""
        ip, tid = dest
        _x.send(str(ip), int(tid), pickle.dumps((self._id, bytes(data))))

    def recv(self) -> List[Tuple[Tuple[str, int], bytes]]:
        """Every message received so far, oldest first, as [(sender_id, bytes)]; [] when
        none. Messages that arrived between calls are kept for this recv."""
        out = []
        for raw in _x.recv():
            try:
                sender, data = pickle.loads(raw)
            except Exception:
                continue  # not a ((ip, tid), bytes) pickle: not ours to deliver
            out.append((tuple(sender), data))
        return out

    def close(self) -> None:
        """Kept for Cloudburst compatibility; squall keeps unread messages."""


class _Entry:
    __slots__ = ("fn", "ts", "checked")

    def __init__(self, fn: Callable, ts: int, checked: float) -> None:
        self.fn, self.ts, self.checked = fn, ts, checked


def _type_name(exc: BaseException) -> str:
    t = type(exc)
    return f"{t.__module__}.{t.__qualname__}"


def error_result(code: int, etype: str, message: str, tb: str = "") -> Pair:
    """The Cloudburst-shaped error tuple, as a DEFAULT Value (type, body)."""
    resp = _x.error_response(code, etype, message, tb)
    return DEFAULT, pickle.dumps(("ERROR: " + message, resp), protocol=4)


class _OutputCapture:
    """Captures sys.stdout, sys.stderr and logging during one call (the caller asked
    with a CallMeta first argument) and sends them to the caller; see
    squall/_callmeta.py. The executor thread is the only thread running user code, so
    swapping sys.stdout/sys.stderr for the call is safe. One object per executor,
    re-armed by ``begin`` for each call (the logging handler is made once)."""

    def __init__(self) -> None:
        self.out_key = ""
        self.out, self.err = io.StringIO(), io.StringIO()
        self.saved: Tuple[Any, Any] = (None, None)
        self.handler = logging.StreamHandler(self.err)
        self.handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))

    def begin(self, out_key: str) -> "_OutputCapture":
        """Arms the capture for one call whose output goes to out_key."""
        self.out_key = out_key
        self.out, self.err = io.StringIO(), io.StringIO()
        self.handler.stream = self.err
        return self

    def __enter__(self) -> "_OutputCapture":
        self.saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = self.out, self.err
        logging.getLogger().addHandler(self.handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger().removeHandler(self.handler)
        sys.stdout, sys.stderr = self.saved

    def ship(self, ident: str, reply_to: str) -> None:
        """Sends {"executor", "stdout", "stderr"} when there was output: pushed to
        reply_to under response_id out_key, else stored at out_key; best effort (a
        failed send loses the output, never the result)."""
        texts = []
        for buf in (self.out, self.err):
            text = buf.getvalue()
            if len(text) > MAX_OUTPUT_CHARS:
                text = text[:MAX_OUTPUT_CHARS] + f"\n[... {len(text) - MAX_OUTPUT_CHARS} " \
                    "characters of output cut]\n"
            texts.append(text)
        if not any(texts):
            return
        rec = {"executor": ident, "stdout": texts[0], "stderr": texts[1]}
        try:
            if reply_to:
                _x.push(reply_to, self.out_key, *dump(rec))
            else:
                _x.kvs_put(self.out_key, encode_value(*dump(rec)))
        except Exception:  # noqa: BLE001 -- output is best effort
            pass


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class Executor:
    """Runs calls for one executor process (made once by the C executor)."""

    def __init__(self, ident: str, function_ttl: float, ref_timeout: float,
                 cache_dir: str = "") -> None:
        self.ident = ident
        self.function_ttl = function_ttl
        self.ref_timeout = ref_timeout
        self.cache = NodeCache(cache_dir) if cache_dir else None
        self.lib = UserLibrary(self.cache)
        self.functions: Dict[str, _Entry] = {}
        self.capture = _OutputCapture()

    # -- functions ---------------------------------------------------------------------
    def _instantiate(self, obj: Any, name: str) -> Callable:
        if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], type):
            cls, init = obj
            init = tuple(init) if isinstance(init, (tuple, list)) else (init,)
            return cls(self.lib, *init).run
        if not callable(obj):
            raise TypeError(f"funcs/{name} holds a {type(obj).__name__}, not a function")
        return obj

    def function(self, name: str) -> Callable:
        """The callable registered as name: kept, re-checked after function_ttl."""
        entry = self.functions.get(name)
        now = time.monotonic()
        if entry is not None and now - entry.checked < self.function_ttl:
            return entry.fn
        got = _x.kvs_get("funcs/" + name)
        if got is None or got[0] != LWW:
            if entry is not None:  # functions cannot be deleted: keep what we have
                entry.checked = now
                return entry.fn
            raise FunctionNotFound(f"function {name!r} is not registered "
                                   f"(no key funcs/{name} in the KVS)")
        _kind, ts, value = got
        if entry is not None and entry.ts == ts:
            entry.checked = now
            return entry.fn
        fn = self._instantiate(load_value(value), name)
        self.functions[name] = _Entry(fn, ts, now)
        return fn

    def pin(self, name: str) -> Optional[str]:
        """Loads name for a pin; None on success, else the reason."""
        try:
            self.function(name)
            return None
        except Exception as e:  # noqa: BLE001 -- the reason goes back to the scheduler
            return f"{_type_name(e)}: {e}"

    # -- arguments ---------------------------------------------------------------------
    def resolve_reference(self, ref: Any) -> Any:
        """The value behind a reference: from the node cache when there is one (zero
        copy; the daemon fetches misses; the KVS when the daemon does not answer), else
        from the KVS. Waits up to ref_timeout for a key that does not exist yet (an
        upstream result), then raises KeyError."""
        deadline = time.monotonic() + self.ref_timeout
        pause = 0.002
        deserialize = bool(getattr(ref, "deserialize", True))
        while True:
            if self.cache is not None and deserialize:
                found, value = self.cache.get(ref.key)
                if found and value is not FALLBACK:
                    return value
                got = _x.kvs_get(ref.key) if found else None
            else:
                got = _x.kvs_get(ref.key)
            if got is not None:
                return _load_lattice(got, deserialize)
            if time.monotonic() >= deadline:
                raise KeyError(f"referenced key {ref.key!r} does not exist "
                               f"(waited {self.ref_timeout:g} s)")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _argument(self, pair: Pair) -> Any:
        obj = load(*pair)
        if type(obj) in PLAIN_TYPES:  # the common small argument: nothing to resolve
            return obj
        if _reference.is_reference(obj):
            return self.resolve_reference(obj)
        if isinstance(obj, list) and any(_reference.is_reference(o) for o in obj):
            return [self.resolve_reference(o) if _reference.is_reference(o) else o
                    for o in obj]
        return obj

    # -- calls -------------------------------------------------------------------------
    def run(self, name: str, args: List[Pair], reply_to: str = ""
            ) -> Tuple[bool, Pair, Optional[List[Pair]]]:
        """Runs name(user_library, *args); see the module docstring for the result
        and for ``reply_to``."""
        try:
            fn = self.function(name)
        except FunctionNotFound as e:
            return False, error_result(FUNC_NOT_FOUND, "squall.FunctionNotFound", str(e)), None
        except BaseException as e:  # noqa: BLE001 -- a bad pickle is the caller's error
            return False, self._failure(e, f"loading function {name!r} failed: "), None
        # Every call of a DAG runs this right after a wake-up, with cold caches: plain
        # arguments skip the reference checks (_argument) and a call without output
        # capture skips the context manager.
        capture = None
        try:
            values = [self._argument(a) for a in args]
            if values and isinstance(values[0], CallMeta):
                capture = self.capture.begin(values.pop(0).out_key)
            if capture is None:
                result = fn(self.lib, *values)
            else:
                with capture:
                    result = fn(self.lib, *values)
            whole = dump(result)
            parts = [dump(r) for r in result] if isinstance(result, tuple) else None
        except BaseException as e:  # noqa: BLE001 -- user code never kills the executor
            return False, self._failure(e, ""), None
        finally:
            if capture is not None:  # stored before the result, so the caller finds it
                capture.ship(self.ident, reply_to)
            if self.cache is not None:
                self.cache.between_calls()
        return True, whole, parts

    def _failure(self, e: BaseException, prefix: str) -> Pair:
        frames = e.__traceback__
        while frames is not None and frames.tb_next is not None and \
                frames.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            frames = frames.tb_next  # the user's frames first: ours are noise to them
        tb = "".join(traceback.format_exception(type(e), e, frames))
        message = prefix + (str(e) or type(e).__name__)
        return error_result(EXECUTION_ERROR, _type_name(e), message, tb)
