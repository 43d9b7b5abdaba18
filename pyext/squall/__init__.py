"""squall: stateful functions-as-a-service, with a lattice key-value store behind them.

This release exposes the foundations the client is built on:

* ``__version__``, the version of the C core this package was built with;
* ``SquallError`` (and ``LatticeError``), raised for every error that comes from the C
  core; each carries ``code``, ``name`` and ``message``;
* the error table (``errors``, ``strerror``);
* the lattices of the KVS (``LatticeType``) and their payloads: ``merge``, ``validate``,
  ``lww_timestamp`` and encoders/decoders for every lattice type, so Python can build
  and read the bytes the KVS stores without a protobuf library;
* the cluster: ``init`` (start or reuse a local cluster, or connect to one),
  ``shutdown``, ``put`` / ``get`` of Python values through the KVS (``Ref``), and
  ``KvsClient``, the raw KVS transport (``KeyNotFoundError``, ``SquallTimeoutError``);
* remote execution: ``@squall.function`` (``f.remote(...)`` -> ``Future``, ``f.map``),
  ``squall.dag`` / ``f >> g`` (DAGs), ``wait``, ``gather``, ``context()`` (the user
  library inside functions), ``RemoteError``; see docs/guide.md.

Example:

    >>> import squall
    >>> squall.init()                            # doctest: +SKIP
    >>> squall.get(squall.put([1, 2, 3]))        # doctest: +SKIP
    [1, 2, 3]

and with lattices directly:

    >>> import squall
    >>> a = squall.encode_lww(10, b"old")
    >>> b = squall.encode_lww(20, b"new")
    >>> squall.decode_lww(squall.merge(squall.LatticeType.LWW, a, b))
    (20, b'new')
"""
from __future__ import annotations

import enum
from typing import Any, Iterable, Mapping, Union

from . import _cluster, _squall
from ._cluster import Cluster, ClusterError, init
from ._reference import CloudburstReference as Ref
from ._api import (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, Dag, ExecutorCrashed,
                   Future, NoExecutors, RemoteError, RemoteFunction, RemoteTimeoutError,
                   SchedulerError, context, dag, function, gather, wait)

__all__ = [
    "__version__", "SquallError", "LatticeError", "errors", "strerror", "LatticeType",
    "merge", "validate", "lww_timestamp",
    "encode_lww", "decode_lww", "encode_set", "decode_set",
    "encode_priority", "decode_priority",
    "encode_single_causal", "decode_single_causal",
    "encode_multi_causal", "decode_multi_causal",
    "init", "shutdown", "put", "get", "Ref", "Cluster", "ClusterError",
    "KvsClient", "KeyNotFoundError", "SquallTimeoutError",
    "function", "RemoteFunction", "Future", "dag", "Dag", "wait", "gather", "context",
    "RemoteError", "RemoteTimeoutError", "ExecutorCrashed", "NoExecutors", "SchedulerError",
    "ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION",
]

__version__: str = _squall.__version__

SquallError = _squall.SquallError
LatticeError = _squall.LatticeError
#: A key is not in the KVS; also a ``KeyError``.
KeyNotFoundError = _squall.KeyNotFoundError
#: No reply in time (after the retries); also a ``TimeoutError``.
SquallTimeoutError = _squall.SquallTimeoutError
#: The KVS client: ``KvsClient("tcp://127.0.0.1:6450", timeout=10.0)`` with ``get``,
#: ``put``, ``get_many``, ``put_many`` on encoded lattice payloads (GIL released).
KvsClient = _squall.KvsClient

#: The project error table of the C core: name -> (code, message), e.g.
#: ``errors["SQ_EBADLATTICE"] == (-10004, "lattice payload is malformed ...")``.
errors: dict[str, tuple[int, str]] = dict(_squall.errors)

#: Anything with the buffer protocol: bytes, bytearray, memoryview, ...
BytesLike = Union[bytes, bytearray, memoryview]
#: A vector clock: node id -> counter (0 .. 2**32-1).
Clock = Mapping[str, int]

LatticeType = enum.IntEnum("LatticeType", _squall.lattice_types, module=__name__)
LatticeType.__doc__ = """The lattice types of the KVS, numbered as the wire enum LatticeType.

    >>> squall.LatticeType.LWW, int(squall.LatticeType.PRIORITY)
    (<LatticeType.LWW: 1>, 6)
"""


def shutdown() -> None:
    """Disconnects this process: outstanding futures fail (RuntimeError), the result
    poller stops, and the local cluster is stopped if this process started it. Does
    nothing when not initialised; ``squall.init`` may be called again.

    Example:

        >>> squall.shutdown()
    """
    from . import _api
    _api.reset()
    _cluster.shutdown()


def strerror(code: int) -> str:
    """The sentence for a squall result code (0, -errno or a ``SQ_E*`` code).

    >>> squall.strerror(squall.errors["SQ_EKEYDNE"][0])
    'key does not exist'
    """
    return _squall.strerror(code)


def merge(type: int, stored: BytesLike, incoming: BytesLike) -> bytes:
    """Join two encoded payloads of one lattice type, as the KVS does on every write.

    Returns the merged payload in canonical form. Raises ``LatticeError`` when a
    payload is malformed or ``type`` is not a storable lattice type. Large inputs are
    merged without holding the GIL (do not mutate the buffers meanwhile).

    >>> s = squall.merge(squall.LatticeType.SET, squall.encode_set([b"a"]),
    ...                  squall.encode_set([b"b", b"a"]))
    >>> squall.decode_set(s)
    [b'a', b'b']
    """
    return _squall.merge(type, stored, incoming)


def validate(type: int, payload: BytesLike) -> None:
    """Raise ``LatticeError`` unless ``payload`` is a valid payload of ``type``.

    >>> squall.validate(squall.LatticeType.LWW, squall.encode_lww(1, b"x"))
    >>> squall.validate(squall.LatticeType.LWW, b"\\x08")
    Traceback (most recent call last):
    ...
    squall.LatticeError: validate: lattice payload is malformed for its declared type (SQ_EBADLATTICE)
    """
    _squall.validate(type, payload)


def lww_timestamp(id: int = 0) -> int:
    """A last-writer-wins timestamp as Anna makes it: ``now_ms * 10**k + id``.

    ``10**k`` is the smallest power of ten above ``id`` (at least 10), so the low
    digits name the writer. Strictly increasing across calls in one interpreter.

    >>> t1, t2 = squall.lww_timestamp(7), squall.lww_timestamp(7)
    >>> t2 > t1 and t1 % 10 == 7
    True
    """
    return _squall.lww_timestamp(id)


def encode_lww(timestamp: int, value: BytesLike) -> bytes:
    """The LWW payload of ``(timestamp, value)``; the larger timestamp wins a merge,
    a tie goes to the larger value bytes.

    >>> squall.decode_lww(squall.encode_lww(5, b"v"))
    (5, b'v')
    """
    return _squall.encode_lww(timestamp, value)


def decode_lww(payload: BytesLike) -> tuple[int, bytes]:
    """``(timestamp, value)`` of an LWW payload; ``LatticeError`` if malformed."""
    return _squall.decode_lww(payload)


def encode_set(items: Iterable[BytesLike]) -> bytes:
    """The SET / ORDERED_SET payload of ``items`` (sorted, duplicates dropped).

    >>> squall.encode_set([b"b", b"a", b"b"]) == squall.encode_set([b"a", b"b"])
    True
    """
    return _squall.encode_set(items)


def decode_set(payload: BytesLike) -> list[bytes]:
    """The items of a SET / ORDERED_SET payload, sorted; ``LatticeError`` if malformed."""
    return _squall.decode_set(payload)


def encode_priority(priority: float, value: BytesLike) -> bytes:
    """The PRIORITY payload of ``(priority, value)``; the lower priority wins a merge,
    a tie goes to the smaller value bytes. NaN raises ``ValueError``.

    >>> squall.decode_priority(squall.encode_priority(0.5, b"v"))
    (0.5, b'v')
    """
    return _squall.encode_priority(priority, value)


def decode_priority(payload: BytesLike) -> tuple[float, bytes]:
    """``(priority, value)`` of a PRIORITY payload; ``LatticeError`` if malformed."""
    return _squall.decode_priority(payload)


def encode_single_causal(siblings: Iterable[tuple[Clock, BytesLike]]) -> bytes:
    """The SINGLE_CAUSAL payload of concurrent ``(clock, value)`` siblings.

    The siblings are joined as the lattice joins them: one that another sibling's
    clock strictly dominates is dropped; the top-level clock is the pointwise max.

    >>> p = squall.encode_single_causal([({"a": 1}, b"x"), ({"b": 1}, b"y")])
    >>> squall.decode_single_causal(p)
    ({'a': 1, 'b': 1}, [({'a': 1}, b'x'), ({'b': 1}, b'y')])
    """
    return _squall.encode_single_causal(siblings)


def decode_single_causal(payload: BytesLike) -> tuple[dict[str, int], list[tuple[dict[str, int], bytes]]]:
    """``(clock, siblings)`` of a SINGLE_CAUSAL payload; ``LatticeError`` if malformed."""
    return _squall.decode_single_causal(payload)


def encode_multi_causal(siblings: Iterable[tuple[Clock, BytesLike]],
                        deps: Mapping[str, Clock] | None = None) -> bytes:
    """The MULTI_CAUSAL payload of ``(clock, value)`` siblings and dependencies
    (key -> clock of the version this value depends on).

    >>> p = squall.encode_multi_causal([({"a": 2}, b"x")], {"k": {"a": 1}})
    >>> squall.decode_multi_causal(p)
    ({'a': 2}, [({'a': 2}, b'x')], {'k': {'a': 1}})
    """
    return _squall.encode_multi_causal(siblings, deps)


def decode_multi_causal(payload: BytesLike) -> tuple[dict[str, int], list[tuple[dict[str, int], bytes]],
                                                     dict[str, dict[str, int]]]:
    """``(clock, siblings, deps)`` of a MULTI_CAUSAL payload; ``LatticeError`` if malformed."""
    return _squall.decode_multi_causal(payload)


def put(value: Any) -> Ref:
    """Stores ``value`` in the KVS under a new key and returns a reference to it.

    The value is stored the way Cloudburst stores it (an LWW lattice holding a
    ``Value``): ``bytes`` raw, ``str`` as UTF-8, NumPy arrays and objects whose
    pickle reaches 64 KiB as a squall object blob (pickle 5, out-of-band buffers,
    read zero copy by executors through the node cache), anything else with
    cloudpickle. Pass the reference to ``squall.get`` or to remote functions. Needs
    ``squall.init()`` first; raises ``SquallTimeoutError`` if the KVS does not answer.

    Example:

        >>> ref = squall.put(numpy.arange(3))      # doctest: +SKIP
        >>> squall.get(ref)                        # doctest: +SKIP
        array([0, 1, 2])
    """
    import uuid

    from . import _serialize
    kvs = _cluster.current().kvs
    key = str(uuid.uuid4())
    body = _serialize.encode_value(*_serialize.dump_object(value))
    kvs.put(key, LatticeType.LWW, _squall.encode_lww(_squall.lww_timestamp(0), body))
    return Ref(key)


def get(ref: "Ref | str", timeout: float | None = None) -> Any:
    """The value behind a reference from ``squall.put`` (or the value of a KVS key).

    On a node with a squall cache (any local cluster) the value is read from the cache
    the way executors read it: a NumPy array comes back **zero copy, as a read-only
    view** of the shared mapping (``.copy()`` it to modify it); a miss is fetched into
    the cache once. Elsewhere it is read from the KVS. A key holding a set (SET or
    ORDERED_SET lattice, e.g. stored by Cloudburst) reads as the list of its elements.

    Raises ``KeyNotFoundError`` (a ``KeyError``) when the key does not exist,
    ``SquallTimeoutError`` when the KVS does not answer within ``timeout`` seconds per
    attempt (default: the client's 10 s), ``TypeError`` when the key holds a lattice
    squall values are not stored in (causal, priority).

    Example:

        >>> squall.get(squall.put("hello"))        # doctest: +SKIP
        'hello'
    """
    from . import _clientcache, _serialize
    cluster = _cluster.current()
    key = ref if isinstance(ref, str) else ref.key
    found, value = _clientcache.lookup(cluster, key)
    if not found:
        raise KeyNotFoundError(f"no value is stored under key {key!r}")
    if value is not _clientcache.UNAVAILABLE:
        return value
    ltype, payload = cluster.kvs.get(key, timeout=timeout)
    if ltype in (LatticeType.SET, LatticeType.ORDERED_SET):
        return [_serialize.load_value(v) for v in _squall.decode_set(payload)]
    if ltype != LatticeType.LWW:
        raise TypeError(f"key {key!r} holds a {LatticeType(ltype).name} lattice; "
                        "squall.get reads values stored by squall.put (LWW) and sets")
    _, value = _squall.decode_lww(payload)
    return _serialize.load(*_serialize.decode_value(value))
