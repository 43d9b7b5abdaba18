"""The Cloudburst scheduler messages the client sends and reads.

The bytes are made and parsed in C with protobuf-c (``_squall.encode_*`` /
``decode_*``, pyext/ext_wire.c) from common/proto/cloudburst.proto, so field numbers
and encodings are the daemons' own; squall's extension fields (``timeout_ms`` = 100,
``response_address`` = 101, GenericResponse 100..103) are included. Replies are
untrusted: they are decoded through sq_proto_unpack (size and nesting limits) and a
malformed one raises ``ValueError``.

Example:

    >>> msg = function_call("f", [(0, b"x")], "key")
    >>> function_call("f", [], "k", response_address="tcp://127.0.0.1:5") != msg
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Sequence, Tuple

from . import _squall

Pair = Tuple[int, bytes]


def function(name: str, body: bytes) -> bytes:
    """``Function{name, body}``; body is a serialized Value holding the pickle."""
    return _squall.encode_function(name, body)


def function_call(name: str, args: Sequence[Pair], response_key: str, timeout_ms: int = 0,
                  response_address: str = "") -> bytes:
    """``FunctionCall{name, arguments, response_key, timeout_ms, response_address}``:
    with a response address the executor pushes the result there, else it stores it at
    response_key."""
    return _squall.encode_function_call(name, list(args), response_key, timeout_ms,
                                        response_address)


def dag(name: str, functions: Sequence[str], connections: Sequence[Tuple[str, str]]) -> bytes:
    """``Dag{name, functions (REGULAR), connections}``."""
    return _squall.encode_dag(name, list(functions), [tuple(c) for c in connections])


def dag_call(name: str, function_args: Mapping[str, Sequence[Pair]], output_key: str,
             timeout_ms: int = 0, response_address: str = "",
             ack_failures_only: bool = False) -> bytes:
    """``DagCall{name, function_args, output_key, timeout_ms, response_address,
    ack_failures_only}``: with a response address the sink pushes the result there,
    else it goes to the KVS; with ack_failures_only (and both an output key and a
    response address) the scheduler replies only when it refuses the call."""
    return _squall.encode_dag_call(name, {k: list(v) for k, v in function_args.items()},
                                   output_key, timeout_ms, response_address,
                                   ack_failures_only)


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
    return GenericResponse(*_squall.decode_generic_response(data))


def parse_string_set(data: bytes) -> List[str]:
    """The keys of a StringSet (the scheduler's function list); ValueError if malformed."""
    return _squall.decode_string_set(data)
