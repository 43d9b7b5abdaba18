"""Values as Cloudburst serialises them (PROTOCOL.md §3.2), without a protobuf library.

``dump(x)`` gives ``(type, body)``: ``bytes`` -> DEFAULT raw, ``str`` -> STRING UTF-8,
anything else (NumPy arrays included: pyarrow's legacy format is gone) -> DEFAULT
cloudpickle. ``load(type, body)`` inverts it; a DEFAULT body that does not unpickle is
returned as raw bytes (Cloudburst's rule, ambiguous by design: a bytes payload that is
a valid pickle is unpickled). ``encode_value``/``decode_value`` read and write the
serialized ``Value`` message (field 1 body, field 2 type) that the KVS stores.

Example:

    >>> t, b = dump("hi")
    >>> load(t, b)
    'hi'
    >>> decode_value(encode_value(t, b)) == (t, b)
    True
"""
from __future__ import annotations

import pickle
import sys
from typing import Any, Tuple

import cloudpickle

DEFAULT, NUMPY, STRING = 0, 1, 2
MAX_VALUE_BYTES = 1 << 31
#: Objects whose pickle is at least this large are stored as squall blobs (zero copy).
BLOB_MIN_BYTES = 64 * 1024
_BLOB_MAGIC = b"SQOB"


#: Types whose pickle is the same with the standard pickler as with cloudpickle's
#: (which costs ~8 us more per call to set up): the hot path of small arguments/results,
#: and (squall._executor) arguments that cannot be or hold a reference.
PLAIN_TYPES = frozenset((int, float, bool, complex, type(None), str, bytes))


def dump(x: Any) -> Tuple[int, bytes]:
    """Serialises x the Cloudburst way; returns (SerializerType, body)."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        return DEFAULT, bytes(x)
    if isinstance(x, str):
        return STRING, x.encode("utf-8")
    t = type(x)
    if t in PLAIN_TYPES or (t is tuple and len(x) <= 8
                            and all(type(e) in PLAIN_TYPES for e in x)):
        return DEFAULT, pickle.dumps(x, protocol=cloudpickle.DEFAULT_PROTOCOL)
    return DEFAULT, cloudpickle.dumps(x)


def dump_object(x: Any) -> Tuple[int, bytes]:
    """Like dump, but NumPy arrays and objects whose pickle reaches BLOB_MIN_BYTES
    become a squall object blob (docs/cache.md "Values"): executors then read them
    from the node cache without copying. Objects that need cloudpickle (anything
    from ``__main__``) stay cloudpickle."""
    if isinstance(x, (bytes, bytearray, memoryview, str)):
        return dump(x)
    np = sys.modules.get("numpy")
    kind, body = (None, b"") if np is not None and type(x) is np.ndarray else dump(x)
    if kind is None or len(body) >= BLOB_MIN_BYTES:
        from ._blob import dumps_blob
        try:
            blob = dumps_blob(x)
            if b"__main__" not in blob:
                return DEFAULT, blob
        except Exception:  # noqa: BLE001 -- not picklable without cloudpickle
            pass
    return dump(x) if kind is None else (kind, body)


def load(kind: int, body: bytes) -> Any:
    """Inverse of dump and dump_object. NUMPY (pyarrow legacy) bodies are refused
    with ValueError."""
    if kind == STRING:
        return bytes(body).decode("utf-8")
    if kind == NUMPY:
        raise ValueError("Value type NUMPY (pyarrow's removed legacy format) is not "
                         "supported; send arrays as DEFAULT (cloudpickle)")
    # Every executor argument comes through here: compare the slice as it is (bytes,
    # bytearray and memoryview all compare by content) rather than copying it.
    if body[:4] == _BLOB_MAGIC:
        from ._blob import loads_blob
        try:
            return loads_blob(body)
        except Exception:  # noqa: BLE001 -- raw bytes that merely start alike
            pass
    try:
        return pickle.loads(body)  # what cloudpickle.loads is
    except Exception:
        return bytes(body)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_value(kind: int, body: bytes) -> bytes:
    """The serialized protobuf ``Value{body, type}``."""
    out = b"\x0a" + _varint(len(body)) + bytes(body)
    return out + (b"\x10" + _varint(kind) if kind else b"")


def _read_varint(buf: memoryview, i: int) -> Tuple[int, int]:
    n = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated or oversized varint in a Value")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def decode_value(data: bytes) -> Tuple[int, bytes]:
    """Parses a serialized ``Value``; unknown fields are skipped. ValueError if malformed."""
    buf = memoryview(data)
    i, kind, body = 0, DEFAULT, b""
    while i < len(buf):
        tag, i = _read_varint(buf, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = _read_varint(buf, i)
            if field == 2:
                kind = v
        elif wire == 2:
            n, i = _read_varint(buf, i)
            if n > len(buf) - i:
                raise ValueError("a Value field runs past the end of the data")
            if field == 1:
                body = bytes(buf[i:i + n])
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire} in a Value")
    if i != len(buf):
        raise ValueError("a Value field runs past the end of the data")
    return kind, body


def load_value(data: bytes) -> Any:
    """decode_value then load."""
    return load(*decode_value(data))
