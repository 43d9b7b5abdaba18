"""The squall object serializer: pickle protocol 5 in a squall object blob.

A blob (cache/cache_blob.h) is a pickle-5 stream followed by its out-of-band buffers,
each 64-byte aligned from an aligned start, so a reader can rebuild the object over
the blob's memory without copying a byte: ``loads_blob`` over a bytes object, or
``CacheReader.get`` over the node cache's shared mapping. squall stores objects in the
KVS this way, inside a Cloudburst ``Value`` body; the blob's magic (``is_blob``)
tells it apart from a plain cloudpickle body.

Plain NumPy arrays (exactly ``numpy.ndarray``, C or Fortran contiguous, a plain
numeric, bool, bytes or str dtype) are reduced to ``_ndarray(buffer, dtype_str, shape, order)`` instead
of NumPy's own reducer: the same out-of-band buffer, but one global lookup and no
dtype reconstruction on load, which roughly halves ``pickle.loads`` on the hot path.
Everything else goes through pickle unchanged (and cloudpickle is not needed for
data; functions are serialized elsewhere).

Example:

    >>> import numpy as np
    >>> from squall._blob import dumps_blob, loads_blob
    >>> a = loads_blob(dumps_blob({"w": np.arange(4.0)}))["w"]
    >>> a.tolist(), a.flags.writeable
    ([0.0, 1.0, 2.0, 3.0], False)
"""
from __future__ import annotations

import io
import pickle
from typing import Any, Union

from . import _squall

try:
    import numpy as _numpy
except ImportError:  # numpy is a dependency, but blobs of other objects need none
    _numpy = None

__all__ = ["dumps_blob", "loads_blob", "is_blob", "BLOB_MAGIC"]

BytesLike = Union[bytes, bytearray, memoryview]

#: First four bytes of every blob (b"SQOB").
BLOB_MAGIC: bytes = _squall.BLOB_MAGIC.to_bytes(4, "little")
_LWW = 1  # LatticeType.LWW: what squall stores objects as


def _ndarray(buf: Any, dtype: Any, shape: tuple, order: str) -> Any:
    """Rebuilds an array reduced by _Pickler over `buf` (no copy; read-only when
    the buffer is)."""
    a = _numpy.frombuffer(buf, dtype)
    if len(shape) != 1:
        a = a.reshape(shape, order=order)
    return a


class _Pickler(pickle.Pickler):
    """Protocol-5 pickler with the lean reducer for plain NumPy arrays."""

    def __init__(self, file: io.BytesIO, buffer_callback: Any, ndarray_type: Any) -> None:
        super().__init__(file, protocol=5, buffer_callback=buffer_callback)
        self._ndarray_type = ndarray_type

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is not self._ndarray_type:
            return NotImplemented
        dt = obj.dtype
        if dt.hasobject or dt.fields is not None or dt.subdtype is not None \
                or dt.itemsize == 0 or dt.kind in "mM":
            return NotImplemented  # datetimes export no buffer: NumPy's reducer
        if obj.flags.c_contiguous:
            order = "C"
        elif obj.flags.f_contiguous:
            order = "F"
        else:
            return NotImplemented  # NumPy's reducer copies it in-band
        return _ndarray, (pickle.PickleBuffer(obj), dt.str, obj.shape, order)


def dumps_blob(obj: Any, *, lattice_type: int = _LWW, meta: BytesLike = b"") -> bytes:
    """Serializes `obj` into a squall object blob (pickle protocol 5, out-of-band
    buffers 64-byte aligned after the stream).

    `lattice_type` and `meta` fill the blob's lattice fields (the cache daemon sets
    them when it stores a value; leave the defaults for KVS bodies). Raises
    ``pickle.PicklingError`` (or whatever pickling `obj` raises) when `obj` cannot be
    pickled, ``SquallError`` when the result would exceed the blob limits (1 TiB,
    65,536 buffers).

    >>> loads_blob(dumps_blob([1, b"two"]))
    [1, b'two']
    """
    buffers: list = []
    f = io.BytesIO()
    _Pickler(f, buffers.append, _numpy.ndarray if _numpy else None).dump(obj)
    return _squall.blob_encode(f.getbuffer(), buffers, lattice_type, meta)


def loads_blob(data: BytesLike) -> Any:
    """Rebuilds the object of a blob, zero copy: out-of-band buffers (NumPy arrays,
    ``PickleBuffer``-aware types) become read-only views of `data`, which they keep
    alive. For 64-byte aligned arrays, place the blob at an aligned address (a
    bytes object is not; NumPy copes, the array is then just not flagged aligned).

    Raises ``SquallError`` (code ``SQ_ECORRUPT``) when `data` is not a valid blob;
    errors of ``pickle.loads`` when the stream is damaged.

    >>> import numpy as np
    >>> loads_blob(dumps_blob(np.zeros((2, 3), order="F"))).flags.f_contiguous
    True
    """
    _, _, stream, buffers = _squall.blob_parse(data)
    return pickle.loads(stream, buffers=buffers)


def is_blob(data: BytesLike) -> bool:
    """True when `data` starts with the blob magic (a cheap test, not a validation).

    >>> is_blob(dumps_blob(1)), is_blob(b"\\x80\\x05K\\x01.")
    (True, False)
    """
    return bytes(memoryview(data)[:4]) == BLOB_MAGIC
