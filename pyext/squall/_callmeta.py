"""The marker a squall client puts first in a call's arguments to ask for its output.

``squall.function`` calls send ``CallMeta(out_key)`` as their first argument. The
executor (``_executor.Executor.run``) removes it before calling the function, captures
everything the call writes to ``sys.stdout``/``sys.stderr`` and to ``logging``, and,
when there was any, sends ``{"executor", "stdout", "stderr"}`` (cloudpickled) *before*
the result: pushed to the call's response address as a Value whose response_id is
``out_key`` (squall's client, which prints it as soon as it arrives, tagged with the
executor), or stored at ``out_key`` (LWW) when the call has no response address.
Calls without the marker (Cloudburst clients) are run exactly as before and their
output is not captured.

The class lives in its own module so that both the client and the executors import it
without pulling in anything else.

Example:

    >>> CallMeta("abc.out").out_key
    'abc.out'
"""
from __future__ import annotations

import pickle
from typing import Tuple

#: Captured output beyond this many characters per stream is cut (with a note).
MAX_OUTPUT_CHARS = 1 << 20


class CallMeta:
    """Per-call options that travel as the first argument (see the module docstring)."""

    __slots__ = ("out_key",)

    def __init__(self, out_key: str) -> None:
        self.out_key = out_key

    def __getstate__(self) -> dict:
        return {"out_key": self.out_key}

    def __setstate__(self, state: dict) -> None:
        self.out_key = str(state.get("out_key", ""))

    def __repr__(self) -> str:
        return f"CallMeta({self.out_key!r})"


def _template() -> Tuple[bytes, bytes]:
    """The bytes of ``pickle.dumps(CallMeta(k), protocol=5)`` around k's SHORT_BINUNICODE
    opcode, from a one-character key; the frame header (11 bytes) is rebuilt per key."""
    whole = pickle.dumps(CallMeta("\x00"), protocol=5)
    at = whole.index(b"\x8c\x01\x00")
    return whole[11:at], whole[at + 3:]


_PRE, _POST = _template()


def dump_meta(out_key: str) -> Tuple[int, bytes]:
    """The (DEFAULT, pickle) Value of ``CallMeta(out_key)``: exactly the standard
    pickler's bytes (protocol 5; the class is importable everywhere, cloudpickle would
    cost ~20 us), spliced from a template for keys under 256 bytes (1 us instead of
    5.6: one per function of every call)."""
    key = out_key.encode()
    if len(key) > 255:
        return 0, pickle.dumps(CallMeta(out_key), protocol=5)
    body = _PRE + b"\x8c" + bytes((len(key),)) + key + _POST
    return 0, b"\x80\x05\x95" + len(body).to_bytes(8, "little") + body
