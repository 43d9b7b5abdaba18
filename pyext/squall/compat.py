"""Cloudburst's client API on squall: change one import and a Cloudburst program runs.

    from cloudburst.client.client import CloudburstConnection     # before
    from squall.compat import CloudburstConnection                # after

Method names, arguments and results follow Cloudburst's ``CloudburstConnection``
(PROTOCOL.md §4.1): functions take the user library as their first argument, values
are stored as Cloudburst stores them, futures have ``get()``. Differences, all of them
fixes of Cloudburst's failure modes:

* nothing waits forever: futures fail with ``SquallTimeoutError`` after their
  deadline, and ``call_dag(direct_response=True)`` waits up to ``direct_timeout``
  seconds (default 30) instead of returning None after 1 s;
* direct responses are matched to their call (squall's executors tag each pushed
  result with its output key), so a late answer never reaches the next call;
* a failed call raises the remote exception from ``get()`` (Cloudburst returned the
  ``('ERROR: ...', bytes)`` tuple);
* ``list()`` prints the names as Cloudburst does and also returns them;
* ``func_addr`` may carry squall's port offset: ``"host:offset"``.

Example:

    >>> conn = CloudburstConnection("127.0.0.1")            # doctest: +SKIP
    >>> inc = conn.register(lambda lib, x: x + 1, "inc")    # doctest: +SKIP
    >>> inc(1).get()                                        # doctest: +SKIP
    2
"""
from __future__ import annotations

import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import _api, _clientcache, _cluster, _serialize, _squall, _wire
from ._reference import CloudburstReference

NORMAL, SINGLE, MULTI = 0, 1, 2
LWW, SET = 1, 2

#: Cloudburst's future: ``get()`` returns the result (squall's Future).
CloudburstFuture = _api.Future

__all__ = ["CloudburstConnection", "CloudburstFunction", "CloudburstFuture",
           "CloudburstReference", "NORMAL", "SINGLE", "MULTI"]


def _arguments(arg: Any) -> List[Any]:
    return list(arg) if isinstance(arg, list) else [arg]


def _dump_arg(a: Any) -> Tuple[int, bytes]:
    if isinstance(a, _api.Future):
        a = CloudburstReference(a.key)
    return _serialize.dump(a)


class CloudburstFunction:
    """A registered function: ``fn(*args)`` calls it and returns a future (None when
    the scheduler refused the call)."""

    def __init__(self, name: str, conn: "CloudburstConnection") -> None:
        self.name = name
        self._conn = conn

    def get_name(self) -> str:
        """The registered name."""
        return self.name

    def __call__(self, *args: Any) -> Optional[_api.Future]:
        rid = self._conn.exec_func(self.name, args)
        return _api._submit(rid, [], None, f"{self.name}()", in_kvs=True) if rid else None


class CloudburstConnection:
    """A connection to a squall cluster with Cloudburst's methods.

    ``func_addr`` is the scheduler's host (``"host:offset"`` for a cluster started
    with a port offset). ``ip``, ``tid`` and ``local`` are accepted for
    compatibility; squall needs no response port. Uses the cluster of
    ``squall.init`` when this process already has one.
    """

    def __init__(self, func_addr: str, ip: Optional[str] = None, tid: int = 0,
                 local: bool = False, direct_timeout: float = 30.0) -> None:
        self.direct_timeout = direct_timeout
        try:
            self.cluster = _cluster.current()
        except RuntimeError:
            self.cluster = _cluster.init(address=func_addr)

    # -- functions ------------------------------------------------------------------
    def register(self, function: Any, name: str) -> CloudburstFunction:
        """Registers a callable ``f(user_library, *args)`` or a ``(Class,
        init_args)`` pair as ``name`` (re-registering overwrites). RuntimeError
        (SchedulerError) when the scheduler refuses."""
        if callable(function):
            _api._ship_by_value(function)
        elif isinstance(function, tuple) and function:
            _api._ship_by_value(function[0])
        _api.register_object(name, function)
        return CloudburstFunction(name, self)

    def get_function(self, name: str) -> Optional[CloudburstFunction]:
        """The handle of a registered function, or None (with a message) if unknown."""
        if name not in self._names(name):
            print(f"No function found with name {name}.")
            return None
        return CloudburstFunction(name, self)

    def exec_func(self, name: str, args: Sequence[Any]) -> str:
        """Calls ``name(*args)`` once; returns the result key ('' on failure). The
        executor stores the result there, as in Cloudburst (no response address)."""
        key = str(uuid.uuid4())
        msg = _wire.function_call(name, [_dump_arg(a) for a in args], key)
        try:
            resp = _wire.parse_generic_response(_api.scheduler_request(5002, msg))
        except _squall.SquallError:
            return ""
        return resp.response_id if resp.success else ""

    def _names(self, prefix: str = "") -> List[str]:
        return sorted(_wire.parse_string_set(_api.scheduler_request(5003, prefix.encode())))

    def list(self, prefix: Optional[str] = None) -> List[str]:
        """Prints (and returns) the registered function names starting with prefix."""
        names = self._names(prefix or "")
        for n in names:
            print(n)
        return names

    # -- DAGs -------------------------------------------------------------------------
    def register_dag(self, name: str, functions: Sequence[Any],
                     connections: Sequence[Tuple[str, str]], gpu_functions: Sequence[str] = (),
                     batching_functions: Sequence[str] = (),
                     colocated: Sequence[str] = ()) -> Tuple[bool, Optional[str]]:
        """Registers a DAG of registered functions; ``(success, error)``."""
        names = [f[0] if isinstance(f, tuple) else f for f in functions]
        try:
            _api.scheduler_call(5004, _wire.dag(name, names, list(connections)),
                                f"registering DAG {name!r}")
        except _api.SchedulerError as e:
            return False, e.error
        return True, None

    def call_dag(self, dname: str, arg_map: Dict[str, Any], direct_response: bool = False,
                 consistency: int = NORMAL, output_key: Optional[str] = None,
                 client_id: Optional[str] = None, dry_run: bool = False,
                 continuation: Any = None) -> Any:
        """Calls a DAG; ``arg_map`` maps function names to an argument or a list of
        arguments. Returns a future, or with ``direct_response`` the result itself.
        RuntimeError when the scheduler refuses; only NORMAL consistency."""
        if consistency != NORMAL or dry_run or continuation is not None:
            raise NotImplementedError("squall.compat.call_dag: only NORMAL consistency "
                                      "without dry_run/continuation")
        key = output_key or str(uuid.uuid4())
        fargs = {fn: [_dump_arg(a) for a in _arguments(v)] for fn, v in arg_map.items()}
        if not direct_response:  # Cloudburst: the sink stores the result at the key
            resp = _api.scheduler_call(5005, _wire.dag_call(dname, fargs, key),
                                       f"calling DAG {dname!r}")
            return _api._submit(resp.response_id or key, [], None, f"DAG {dname}",
                                in_kvs=True)
        # the sink pushes to this process's socket, tagged with the output key
        fut = _api._submit(key, [], None, f"DAG {dname}")
        try:
            _api.scheduler_call(5005, _wire.dag_call(dname, fargs, key,
                                                     response_address=_api.response_address()),
                                f"calling DAG {dname!r}")
        except BaseException:
            _api._receiver().forget(key)
            raise
        return fut.result(self.direct_timeout)

    def delete_dag(self, dname: str) -> Tuple[bool, Optional[str]]:
        """Deletes a DAG; ``(success, error)``."""
        try:
            _api.scheduler_call(5006, dname.encode(), f"deleting DAG {dname!r}")
        except _api.SchedulerError as e:
            return False, e.error
        return True, None

    # -- objects ----------------------------------------------------------------------
    def put_object(self, key: str, value: Any) -> Dict[str, bool]:
        """Stores a value (a Python ``set`` as a SET lattice, else LWW)."""
        if isinstance(value, set):
            payload = _squall.encode_set([_serialize.encode_value(*_serialize.dump(v))
                                          for v in value])
            _clientcache.store(self.cluster, key, SET, payload)
        else:
            body = _serialize.encode_value(*_serialize.dump(value))
            _clientcache.store(self.cluster, key, LWW,
                               _squall.encode_lww(_squall.lww_timestamp(0), body))
        return {key: True}

    def get_object(self, key: str) -> Any:
        """The value stored under key (a set for a SET lattice); KeyError if missing."""
        ltype, payload = self.cluster.kvs.get(key)
        if ltype == SET:
            return {_serialize.load_value(v) for v in _squall.decode_set(payload)}
        return _serialize.load_value(_squall.decode_lww(payload)[1])
