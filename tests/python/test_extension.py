"""The _squall extension and the squall package surface: version, error table,
lattice payloads and merges (against small pure-Python references and the lattice
laws), robustness against malformed payloads, and the `squall` console command."""
from __future__ import annotations

import doctest
import errno
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import squall
from squall import LatticeType as LT
from squall import _squall

ROOT = Path(__file__).resolve().parents[2]
STORABLE = [LT.LWW, LT.SET, LT.SINGLE_CAUSAL, LT.MULTI_CAUSAL, LT.ORDERED_SET, LT.PRIORITY]


def code(name: str) -> int:
    return squall.errors[name][0]


# ---- version -----------------------------------------------------------------------

def test_version_equals_pyproject_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert squall.__version__ == project["version"]
    assert _squall.__version__ == squall.__version__


def test_version_equals_installed_distribution_metadata():
    assert importlib.metadata.version("squall") == squall.__version__


# ---- error table ---------------------------------------------------------------------

def c_error_table() -> dict[str, tuple[int, str]]:
    text = (ROOT / "common" / "sq_error.h").read_text()
    base = int(re.search(r"#define SQ_ERR_BASE \((-?\d+)\)", text).group(1))
    rows = re.findall(r'X\((SQ_E\w+),\s*(\d+),\s*"((?:[^"\\]|\\.)*)"\)', text)
    assert rows, "no rows parsed from sq_error.h"
    return {name: (base - int(off), msg) for name, off, msg in rows}


def test_error_table_has_every_row_of_sq_error_h():
    assert squall.errors == c_error_table()
    assert _squall.ERR_BASE == -10000


def test_strerror_gives_the_table_sentence_for_every_code():
    for name, (c, msg) in squall.errors.items():
        assert squall.strerror(c) == msg
        assert _squall.errname(c) == name


def test_strerror_covers_success_errno_and_unknown_codes():
    assert squall.strerror(0) == "success"
    assert squall.strerror(-errno.ENOENT) == os.strerror(errno.ENOENT)
    assert _squall.errname(-errno.ENOMEM) == "ENOMEM"
    assert squall.strerror(-20000) == "unknown error"
    with pytest.raises(OverflowError):
        squall.strerror(2**40)


def test_c_errors_raise_squall_error_subclass_with_code_name_and_message():
    with pytest.raises(squall.LatticeError) as info:
        squall.merge(99, b"", b"")
    e = info.value
    assert isinstance(e, squall.SquallError)
    assert e.code == code("SQ_EUNKNOWNTYPE")
    assert e.name == "SQ_EUNKNOWNTYPE"
    assert e.message == squall.strerror(e.code)
    assert str(e) == f"merge: {e.message} (SQ_EUNKNOWNTYPE)"


def test_lattice_type_none_is_refused_where_a_type_is_required():
    for fn in (lambda: squall.merge(LT.NONE, b"", b""), lambda: squall.validate(LT.NONE, b"")):
        with pytest.raises(squall.LatticeError) as info:
            fn()
        assert info.value.code == code("SQ_EUNKNOWNTYPE")


def test_squall_error_made_in_python_has_attributes_defaulting_to_none():
    e = squall.SquallError("raised by Python code")
    assert (e.code, e.name, e.message) == (None, None, None)
    assert squall.SquallError.__module__ == "squall"


def test_lattice_type_values_equal_the_wire_enum():
    assert {t.name: int(t) for t in LT} == {
        "NONE": 0, "LWW": 1, "SET": 2, "SINGLE_CAUSAL": 3, "MULTI_CAUSAL": 4,
        "ORDERED_SET": 5, "PRIORITY": 6}
    assert _squall.LWW == 1 and _squall.PRIORITY == 6


# ---- encoders against an independent protobuf stack ----------------------------------

@pytest.fixture(scope="module")
def pb():
    from kvs_harness import wire
    return wire()


def test_lww_payload_is_the_protobuf_lwwvalue(pb):
    raw = squall.encode_lww(2**64 - 1, b"\x00value")
    msg = pb.LWWValue.FromString(raw)
    assert (msg.timestamp, msg.value) == (2**64 - 1, b"\x00value")
    other = pb.LWWValue(timestamp=12, value=b"v").SerializeToString()
    assert squall.decode_lww(other) == (12, b"v")


def test_set_payload_is_the_protobuf_setvalue_sorted_and_unique(pb):
    raw = squall.encode_set([b"b", b"a", b"ab", b"b", bytearray(b"")])
    assert list(pb.SetValue.FromString(raw).values) == [b"", b"a", b"ab", b"b"]
    other = pb.SetValue(values=[b"z", b"y", b"z"]).SerializeToString()
    assert squall.decode_set(other) == [b"y", b"z"]


def test_priority_payload_is_the_protobuf_priorityvalue(pb):
    raw = squall.encode_priority(-1.5, memoryview(b"v"))
    msg = pb.PriorityValue.FromString(raw)
    assert (msg.priority, msg.value) == (-1.5, b"v")
    assert squall.decode_priority(pb.PriorityValue(priority=3.0, value=b"w").SerializeToString()) \
        == (3.0, b"w")


def test_causal_payload_carries_top_clock_values_and_sibling_clocks(pb):
    raw = squall.encode_single_causal([({"n1": 2}, b"x"), ({"n2": 1}, b"y")])
    msg = pb.SingleKeyCausalValue.FromString(raw)
    assert dict(msg.vector_clock) == {"n1": 2, "n2": 1}
    assert sorted(msg.values) == [b"x", b"y"]
    clocks = {v: dict(c.vector_clock) for v, c in zip(msg.values, msg.sibling_clocks)}
    assert clocks == {b"x": {"n1": 2}, b"y": {"n2": 1}}


def test_causal_payload_from_an_anna_client_gives_every_sibling_the_top_clock(pb):
    anna = pb.SingleKeyCausalValue(vector_clock={"a": 1, "b": 2}, values=[b"v", b"u"])
    clock, sibs = squall.decode_single_causal(anna.SerializeToString())
    assert clock == {"a": 1, "b": 2}
    assert sorted(sibs, key=lambda s: s[1]) == [({"a": 1, "b": 2}, b"u"), ({"a": 1, "b": 2}, b"v")]


def test_multi_causal_round_trips_dependencies(pb):
    raw = squall.encode_multi_causal([({"a": 3}, b"x")], {"k2": {"a": 1}, "k1": {"b": 4}})
    assert squall.decode_multi_causal(raw) == ({"a": 3}, [({"a": 3}, b"x")],
                                               {"k1": {"b": 4}, "k2": {"a": 1}})
    msg = pb.MultiKeyCausalValue.FromString(raw)
    assert [d.key for d in msg.dependencies] == ["k1", "k2"]


def test_encoders_reject_wrong_argument_types_and_ranges():
    with pytest.raises(TypeError):
        squall.encode_lww(1, "text is not bytes")
    with pytest.raises(ValueError):
        squall.encode_lww(-1, b"")
    with pytest.raises(ValueError):
        squall.encode_lww(2**64, b"")
    with pytest.raises(TypeError):
        squall.encode_set([b"ok", 3])
    with pytest.raises(ValueError):
        squall.encode_priority(float("nan"), b"")
    with pytest.raises(ValueError):
        squall.encode_single_causal([({"a": 2**32}, b"")])
    with pytest.raises(ValueError):
        squall.encode_single_causal([({"a\x00b": 1}, b"")])
    with pytest.raises(TypeError):
        squall.encode_single_causal([({"a": 1}, b"", b"extra")])
    with pytest.raises(TypeError):
        squall.encode_multi_causal([], [("k", {"a": 1})])
    with pytest.raises(TypeError):
        squall.merge(LT.LWW, "str", b"")


def test_encoder_argument_errors_name_the_function_and_the_argument():
    with pytest.raises(TypeError, match="encode_priority: priority must be a real number, not str"):
        squall.encode_priority("high", b"")
    with pytest.raises(TypeError, match="timestamp must be an int"):
        squall.encode_lww(1.5, b"")
    assert squall.decode_priority(squall.encode_priority(2, b"v")) == (2.0, b"v")
    with pytest.raises(TypeError, match="a vector clock's items\\(\\) must be"):
        squall.encode_single_causal([(KeyValuePairs([("a", 1, 2)]), b"")])
    with pytest.raises(TypeError, match="deps must be a dict"):
        squall.encode_multi_causal([], 3)


class KeyValuePairs:
    """A mapping-like object whose items() are whatever it was given (not pairs)."""

    def __init__(self, items):
        self._items = items

    def items(self):
        return list(self._items)


def test_encoders_refuse_a_name_given_twice():
    dup = KeyValuePairs([("n", 1), ("n", 2)])
    with pytest.raises(ValueError, match="names a node twice"):
        squall.encode_single_causal([(dup, b"")])
    with pytest.raises(ValueError, match="deps names a key twice"):
        squall.encode_multi_causal([], KeyValuePairs([("k", {"a": 1}), ("k", {"a": 2})]))


# ---- merge rules against pure-Python references ---------------------------------------

def ref_lww(a, b):
    """Larger timestamp wins; a tie goes to the larger value bytes."""
    return max(a, b)


def ref_priority(a, b):
    """Lower priority wins; a tie goes to the smaller value bytes."""
    return min(a, b)


def ref_set(a, b):
    return sorted(set(a) | set(b))


timestamps = st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1))
values = st.binary(max_size=12)
lwws = st.tuples(timestamps, values)
priorities = st.tuples(st.one_of(st.sampled_from([0.0, 1.0, -1.0]),
                                 st.floats(allow_nan=False)), values)
sets = st.lists(st.binary(max_size=6), max_size=8)


@given(lwws, lwws)
def test_merge_lww_keeps_larger_timestamp_then_larger_value(a, b):
    merged = squall.merge(LT.LWW, squall.encode_lww(*a), squall.encode_lww(*b))
    assert squall.decode_lww(merged) == ref_lww(a, b)


@given(priorities, priorities)
def test_merge_priority_keeps_lower_priority_then_smaller_value(a, b):
    merged = squall.merge(LT.PRIORITY, squall.encode_priority(*a), squall.encode_priority(*b))
    assert squall.decode_priority(merged) == ref_priority(a, b)


@pytest.mark.parametrize("lt", [LT.SET, LT.ORDERED_SET])
@given(a=sets, b=sets)
def test_merge_set_is_sorted_union(lt, a, b):
    merged = squall.merge(lt, squall.encode_set(a), squall.encode_set(b))
    assert squall.decode_set(merged) == ref_set(a, b)
    assert merged == squall.encode_set(a + b)


def dominated(c1: dict, c2: dict) -> bool:
    """c1 < c2: every counter of c1 <= c2's, and the clocks differ."""
    nodes = set(c1) | set(c2)
    return c1 != c2 and all(c1.get(n, 0) <= c2.get(n, 0) for n in nodes)


def ref_causal(sibs_a, sibs_b):
    """Siblings no other sibling strictly dominates, as a set of (clock items, value)."""
    allsibs = {(frozenset(c.items()), v) for c, v in sibs_a + sibs_b}
    return {(c, v) for c, v in allsibs
            if not any(dominated(dict(c), dict(o)) for o, _ in allsibs)}


clocks = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 3), max_size=3)
siblings = st.lists(st.tuples(clocks, st.sampled_from([b"", b"x", b"y", b"zz"])), max_size=4)


@given(siblings, siblings)
def test_merge_single_causal_keeps_siblings_no_other_dominates(a, b):
    merged = squall.merge(LT.SINGLE_CAUSAL, squall.encode_single_causal(a),
                          squall.encode_single_causal(b))
    clock, sibs = squall.decode_single_causal(merged)
    assert {(frozenset(c.items()), v) for c, v in sibs} == ref_causal(a, b)
    expected_top: dict[str, int] = {}
    for c, _ in sibs:
        for n, k in c.items():
            expected_top[n] = max(expected_top.get(n, 0), k)
    assert clock == expected_top


# ---- lattice laws on encoded payloads --------------------------------------------------

deps = st.dictionaries(st.sampled_from(["k1", "k2"]), clocks, max_size=2)
PAYLOADS = {
    LT.LWW: lwws.map(lambda t: squall.encode_lww(*t)),
    LT.SET: sets.map(squall.encode_set),
    LT.ORDERED_SET: sets.map(squall.encode_set),
    LT.PRIORITY: priorities.map(lambda t: squall.encode_priority(*t)),
    LT.SINGLE_CAUSAL: siblings.map(squall.encode_single_causal),
    LT.MULTI_CAUSAL: st.tuples(siblings, deps).map(lambda t: squall.encode_multi_causal(*t)),
}


@pytest.mark.parametrize("lt", STORABLE, ids=lambda t: t.name)
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=150)
@given(data=st.data())
def test_merge_obeys_lattice_laws(lt, data):
    a, b, c = (data.draw(PAYLOADS[lt]) for _ in range(3))
    m = lambda x, y: squall.merge(lt, x, y)  # noqa: E731
    assert m(a, a) == a, "idempotent"
    assert m(a, b) == m(b, a), "commutative"
    assert m(m(a, b), c) == m(a, m(b, c)), "associative"
    assert m(m(a, b), b) == m(a, b), "absorbs what it already holds"


# ---- malformed payloads -----------------------------------------------------------------

DECODERS = {
    LT.LWW: squall.decode_lww, LT.SET: squall.decode_set, LT.ORDERED_SET: squall.decode_set,
    LT.PRIORITY: squall.decode_priority, LT.SINGLE_CAUSAL: squall.decode_single_causal,
    LT.MULTI_CAUSAL: squall.decode_multi_causal,
}

GOOD = {
    LT.LWW: squall.encode_lww(1, b"x"), LT.SET: squall.encode_set([b"x"]),
    LT.ORDERED_SET: squall.encode_set([b"x"]), LT.PRIORITY: squall.encode_priority(1.0, b"x"),
    LT.SINGLE_CAUSAL: squall.encode_single_causal([({"a": 1}, b"x")]),
    LT.MULTI_CAUSAL: squall.encode_multi_causal([({"a": 1}, b"x")], {"k": {"a": 1}}),
}

MALFORMED = [
    b"\x08",                        # varint field with no varint
    b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # 11-byte varint
    b"\x12\x05ab",                  # length 5, 2 bytes present
    b"\x12\xff\xff\xff\xff\x0f",    # length ~4 GiB, nothing present
    b"\x0f",                        # wire type 7 does not exist
    b"\x00",                        # field number 0
]


@pytest.mark.parametrize("lt", STORABLE, ids=lambda t: t.name)
@pytest.mark.parametrize("junk", MALFORMED, ids=lambda j: j.hex())
def test_malformed_payloads_raise_lattice_error(lt, junk):
    with pytest.raises(squall.LatticeError) as info:
        squall.validate(lt, junk)
    assert info.value.code == code("SQ_EBADLATTICE")
    with pytest.raises(squall.LatticeError):
        DECODERS[lt](junk)
    good = GOOD[lt]
    for args in ((good, junk), (junk, good)):
        with pytest.raises(squall.LatticeError):
            squall.merge(lt, *args)


@pytest.mark.parametrize("lt", STORABLE, ids=lambda t: t.name)
@settings(max_examples=300)
@given(junk=st.binary(max_size=48))
def test_random_bytes_decode_or_raise_lattice_error_never_crash(lt, junk):
    try:
        squall.validate(lt, junk)
        valid = True
    except squall.LatticeError:
        valid = False
    try:
        DECODERS[lt](junk)
        decoded = True
    except squall.LatticeError:
        decoded = False
    assert valid == decoded, "validate and decode agree"
    try:
        out = squall.merge(lt, junk, junk)
        assert valid
        squall.validate(lt, out)
    except squall.LatticeError:
        assert not valid


def test_merge_of_two_types_payloads_fails_or_gives_valid_payload():
    # An LWW payload is bytes; merging it as SET either parses it as a SetValue or not.
    lww = squall.encode_lww(5, b"x")
    try:
        squall.validate(LT.SET, squall.merge(LT.SET, lww, squall.encode_set([b"a"])))
    except squall.LatticeError as e:
        assert e.code in (code("SQ_EBADLATTICE"), code("SQ_ELATTICE"))


# ---- large inputs and threads -------------------------------------------------------------

def test_merge_of_large_payloads_is_correct_from_many_threads():
    a = squall.encode_set(i.to_bytes(4, "big") for i in range(0, 40000, 2))
    b = squall.encode_set(i.to_bytes(4, "big") for i in range(1, 40000, 2))
    assert len(a) + len(b) > 64 * 1024  # the GIL-free path
    expected = squall.encode_set(i.to_bytes(4, "big") for i in range(40000))
    results: list[bytes] = []

    def work():
        for _ in range(3):
            results.append(squall.merge(LT.SET, bytearray(a), memoryview(b)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 12 and all(r == expected for r in results)


# ---- timestamps --------------------------------------------------------------------------

@pytest.mark.parametrize("ident,modulus", [(0, 10), (7, 10), (9, 10), (10, 100), (12345, 100000)])
def test_lww_timestamp_is_now_ms_times_power_of_ten_plus_id(ident, modulus):
    before = int(time.time() * 1000)
    ts = squall.lww_timestamp(ident)
    after = int(time.time() * 1000)
    assert ts % modulus == ident
    assert before - 1 <= ts // modulus <= after + 1000  # may run ahead to stay monotonic


def test_lww_timestamp_is_strictly_increasing():
    stamps = [squall.lww_timestamp(3) for _ in range(2000)]
    assert all(x < y for x, y in zip(stamps, stamps[1:]))
    assert all(s % 10 == 3 for s in stamps)


def test_lww_timestamp_rejects_ids_outside_uint32():
    for bad in (-1, 2**32):
        with pytest.raises(ValueError):
            squall.lww_timestamp(bad)


# ---- module hygiene ---------------------------------------------------------------------

def test_docstring_examples_run():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for t in finder.find(squall, "squall", globs={"squall": squall}):
        runner.run(t)
    assert runner.failures == 0 and runner.tries >= 10


def test_module_imports_in_a_subinterpreter():
    interpreters = pytest.importorskip("_xxsubinterpreters")
    interp = interpreters.create()
    try:
        interpreters.run_string(interp, "import squall\n"
                                        "assert squall.decode_lww(squall.encode_lww(1, b'v')) == (1, b'v')\n"
                                        "assert squall.LatticeError.__mro__[1] is squall.SquallError\n")
    finally:
        interpreters.destroy(interp)
    assert squall.decode_lww(squall.encode_lww(2, b"w")) == (2, b"w")


# ---- the console command ------------------------------------------------------------------

def squall_command() -> list[str]:
    exe = Path(sys.executable).parent / "squall"
    found = str(exe) if exe.exists() else shutil.which("squall")
    if found is None:
        pytest.fail("the `squall` console script is not installed next to this interpreter")
    return [found]


def test_squall_version_flag_prints_version():
    r = subprocess.run(squall_command() + ["--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert r.stdout.strip() == f"squall {squall.__version__}"


def test_squall_version_subcommand_prints_version():
    r = subprocess.run(squall_command() + ["version"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, f"squall {squall.__version__}")


def test_squall_unknown_command_exits_2_with_clear_error():
    r = subprocess.run(squall_command() + ["frobnicate"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "invalid choice: 'frobnicate'" in r.stderr


def test_squall_without_command_exits_2():
    from squall import _cli
    assert _cli.main([]) == 2
    assert _cli.main(["version"]) == 0
