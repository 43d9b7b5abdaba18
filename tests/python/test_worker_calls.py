"""squall-worker end to end: one-shot calls against a real KVS and a real worker,
driving executors directly on their ports (no scheduler)."""
from __future__ import annotations

import time

import pytest

from worker_harness import error_fields, is_error, worker_client


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    d = tmp_path_factory.mktemp("worker")
    with worker_client(d, extra=["--function-ttl-ms", "0"]) as client:
        yield client


def square(lib, x):
    return x * x


def test_one_shot_call_stores_result_at_response_key(node):
    node.register("square", square)
    assert node.run("square", 7) == 49
    assert node.run("square", 3, tid=1) == 9


def test_str_and_bytes_arguments_keep_their_types(node):
    node.register("kinds", lambda lib, s, b: (type(s).__name__, type(b).__name__, s, b))
    assert node.run("kinds", "text", b"raw") == ("str", "bytes", "text", b"raw")


def test_unknown_function_gives_func_not_found_error(node):
    res = node.run("no-such-function", 1)
    assert is_error(res)
    resp = error_fields(res)
    assert not resp.success
    assert resp.error == 1  # FUNC_NOT_FOUND
    assert "no-such-function" in resp.error_message
    assert resp.error_type == "squall.FunctionNotFound"


def test_exception_carries_type_message_and_remote_traceback(node):
    def boom(lib, x):
        raise ValueError(f"bad input {x}")

    node.register("boom", boom)
    res = node.run("boom", 5)
    assert is_error(res) and res[0] == "ERROR: bad input 5"
    resp = error_fields(res)
    assert resp.error == 3  # EXECUTION_ERROR
    assert resp.error_type == "builtins.ValueError"
    assert resp.error_message == "bad input 5"
    assert "in boom" in resp.traceback and "ValueError: bad input 5" in resp.traceback
    assert resp.executor.endswith(":0")
    assert node.run("square", 4) == 16  # the executor still serves


def test_reregistered_function_is_picked_up(node):
    node.register("version", lambda lib: 1)
    assert node.run("version") == 1
    node.register("version", lambda lib: 2)
    assert node.run("version") == 2


def test_class_registration_with_non_tuple_init_args(node):
    class Adder:
        def __init__(self, lib, base):
            self.base = base

        def run(self, lib, x):
            return self.base + x

    node.register("adder", (Adder, 100))  # Cloudburst crashed on a non-tuple
    assert node.run("adder", 5) == 105
    node.register("adder2", (Adder, (1,)))
    assert node.run("adder2", 5) == 6


def test_reference_argument_is_resolved_from_the_kvs(node):
    import numpy as np
    from squall._reference import CloudburstReference

    node.put_value("arr-key", np.arange(10))
    node.register("total", lambda lib, a: int(a.sum()))
    assert node.run("total", CloudburstReference("arr-key", True)) == 45


def test_missing_reference_fails_with_clear_error(node):
    from squall._reference import CloudburstReference
    node.register("ident", lambda lib, a: a)
    res = node.run("ident", CloudburstReference("never-written-key", True), timeout=60)
    assert is_error(res)
    assert "never-written-key" in error_fields(res).error_message


def _drain(node, seconds: float):
    """The ThreadStatus messages that arrive within seconds."""
    seen, until = [], time.monotonic() + seconds
    while time.monotonic() < until:
        seen += node.w.statuses(max(0.0, until - time.monotonic()))
    return seen


def _statuses_during_calls(node, n: int, skip_status: bool):
    """Runs n direct-response calls on executor 0; returns (its statuses meanwhile,
    seconds taken)."""
    node.register("square", square)
    assert node.run("square", 2) == 4  # loaded and warm
    _drain(node, 0.3)  # its status, if any
    t0 = time.monotonic()
    for i in range(n):
        fc = node.cb.FunctionCall(name="square", response_key=f"st-{skip_status}-{i}",
                                  response_address=node.response_address,
                                  skip_status=skip_status)
        fc.arguments.CopyFrom(node.args([i]))
        node.push(4020, 0, fc.SerializeToString())
        assert node.recv_direct(30) == i * i  # one at a time: each call ends first
    took = time.monotonic() - t0
    return [s for s in _drain(node, 0.3) if s.tid == 0 and s.running], took


def test_status_after_a_one_shot_call_only_when_the_scheduler_asks(node):
    # Cloudburst's scheduler takes an executor back for one-shot calls on its next
    # status (PROTOCOL.md §3.5): each call is followed by one. squall's scheduler sets
    # skip_status: then only the periodic report (about one per second) comes.
    cloudburst, _ = _statuses_during_calls(node, 30, skip_status=False)
    assert len(cloudburst) >= 30
    squall, took = _statuses_during_calls(node, 30, skip_status=True)
    assert len(squall) <= took + 2, (len(squall), took)
