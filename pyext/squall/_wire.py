"""The few Cloudburst protobuf messages the client sends and reads, without protobuf.

The package has no protobuf runtime dependency, so the client builds the scheduler's
request messages (``Function``, ``FunctionCall``, ``Dag``, ``DagCall``) by hand and
parses its replies (``GenericResponse``, ``StringSet``). Field numbers are those of
common/proto/cloudburst.proto and shared.proto (the wire contract, never renumbered);
squall's extension fields (100..103) are included.

Replies are untrusted: ``parse`` bounds-checks every length and varint and raises
``ValueError`` on malformed input; unknown fields are skipped.

Example:

    >>> msg = function_call("f", [(0, b"x")], "key")
    >>> r = parse_generic_response(field_varint(1, 1) + field_bytes(2, b"key"))
    >>> r.success, r.response_id
    (True, 'key')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

from ._serialize import _read_varint, _varint, encode_value

Pair = Tuple[int, bytes]


def field_bytes(num: int, data: bytes) -> bytes:
    """A length-delimited field (string, bytes, sub-message)."""
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def field_varint(num: int, value: int) -> bytes:
    """A varint field; proto3 omits zero values, so this returns b"" for 0."""
    return _varint(num << 3) + _varint(value) if value else b""


def _text(num: int, s: str) -> bytes:
    return field_bytes(num, s.encode("utf-8")) if s else b""


def _arguments(values: Iterable[Pair]) -> bytes:
    return b"".join(field_bytes(1, encode_value(kind, body)) for kind, body in values)


def function(name: str, body: bytes) -> bytes:
    """``Function{name, body}``; body is a serialized Value holding the pickle."""
    return _text(1, name) + field_bytes(2, body)


def function_call(name: str, args: Sequence[Pair], response_key: str,
                  timeout_ms: int = 0) -> bytes:
    """``FunctionCall{name, arguments, response_key, timeout_ms}``."""
    return (_text(1, name) + field_bytes(3, _arguments(args)) + _text(4, response_key)
            + field_varint(100, timeout_ms))


def dag(name: str, functions: Sequence[str], connections: Sequence[Tuple[str, str]]) -> bytes:
    """``Dag{name, functions (REGULAR), connections}``."""
    out = _text(1, name)
    out += b"".join(field_bytes(2, _text(1, f)) for f in functions)
    out += b"".join(field_bytes(3, _text(1, a) + _text(2, b)) for a, b in connections)
    return out


def dag_call(name: str, function_args: Mapping[str, Sequence[Pair]], output_key: str,
             timeout_ms: int = 0) -> bytes:
    """``DagCall{name, function_args, output_key, timeout_ms}`` (results go to the KVS)."""
    out = _text(1, name)
    for fn, args in function_args.items():
        entry = _text(1, fn) + field_bytes(2, _arguments(args))
        out += field_bytes(2, entry)
    return out + _text(5, output_key) + field_varint(100, timeout_ms)


def parse(data: bytes) -> Dict[int, List[object]]:
    """Field number -> list of values (int for varints, bytes for length-delimited)."""
    buf = memoryview(data)
    i, out = 0, {}  # type: Tuple[int, Dict[int, List[object]]]
    while i < len(buf):
        tag, i = _read_varint(buf, i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = _read_varint(buf, i)
        elif wire == 2:
            n, i = _read_varint(buf, i)
            if n > len(buf) - i:
                raise ValueError("a protobuf field runs past the end of the message")
            v, i = bytes(buf[i:i + n]), i + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            if n > len(buf) - i:
                raise ValueError("a fixed-size protobuf field runs past the end")
            v, i = bytes(buf[i:i + n]), i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.setdefault(num, []).append(v)
    return out


def _str(fields: Dict[int, List[object]], num: int) -> str:
    v = fields.get(num)
    return bytes(v[-1]).decode("utf-8", "replace") if v and isinstance(v[-1], bytes) else ""


def _int(fields: Dict[int, List[object]], num: int) -> int:
    v = fields.get(num)
    return v[-1] if v and isinstance(v[-1], int) else 0


@dataclass
class GenericResponse:
    """The scheduler's reply (and the error record of a failed call)."""
    success: bool
    response_id: str
    error: int
    error_message: str
    error_type: str
    traceback: str
    executor: str


ERROR_NAMES = {0: "NO_CLOUDBURST_ERROR", 1: "FUNC_NOT_FOUND", 2: "NOT_PINNED",
               3: "EXECUTION_ERROR", 4: "NO_SUCH_DAG", 5: "NO_RESOURCES",
               6: "DAG_ALREADY_EXISTS"}


def parse_generic_response(data: bytes) -> GenericResponse:
    """Parses a GenericResponse; ValueError if malformed."""
    f = parse(data)
    return GenericResponse(bool(_int(f, 1)), _str(f, 2), _int(f, 3), _str(f, 100),
                           _str(f, 101), _str(f, 102), _str(f, 103))


def parse_string_set(data: bytes) -> List[str]:
    """The keys of a StringSet (the scheduler's function list)."""
    return [bytes(k).decode("utf-8", "replace") for k in parse(data).get(1, [])
            if isinstance(k, bytes)]
