"""The client's C transport pieces without a cluster: the protobuf-c encoders and
decoders of squall._wire (checked against the generated Python protobuf classes) and
squall._squall.Responses (bind, recv with and without messages, malformed input
counted and skipped, close) and squall._squall.Channel (kept connection: a late reply
is dropped, pipelined sends and their replies)."""
from __future__ import annotations

import threading
import time

import pytest
import zmq

from squall import _squall, _wire
import cb_harness  # noqa: F401 -- generates and imports the protobuf modules
from cb_harness import cb


def test_function_call_carries_arguments_and_both_extensions():
    raw = _wire.function_call("f", [(0, b"\x01"), (2, b"txt")], "key", 1500, "tcp://h:9")
    m = cb.FunctionCall.FromString(raw)
    assert (m.name, m.response_key, m.timeout_ms, m.response_address) == \
        ("f", "key", 1500, "tcp://h:9")
    assert [(v.type, v.body) for v in m.arguments.values] == [(0, b"\x01"), (2, b"txt")]
    plain = cb.FunctionCall.FromString(_wire.function_call("f", [], "k"))
    assert plain.response_address == "" and plain.timeout_ms == 0


def test_dag_and_dag_call_round_trip_through_protobuf():
    d = cb.Dag.FromString(_wire.dag("d", ["a", "b"], [("a", "b")]))
    assert [f.name for f in d.functions] == ["a", "b"]
    assert [(c.source, c.sink) for c in d.connections] == [("a", "b")]
    raw = _wire.dag_call("d", {"a": [(0, b"x")], "b": []}, "out", 7, "tcp://h:1")
    c = cb.DagCall.FromString(raw)
    assert (c.name, c.output_key, c.timeout_ms, c.response_address) == ("d", "out", 7, "tcp://h:1")
    assert [v.body for v in c.function_args["a"].values] == [b"x"]
    assert "b" in c.function_args and not c.function_args["b"].values


def test_function_registration_keeps_the_body_bytes():
    f = cb.Function.FromString(_wire.function("f", b"\x00body\xff"))
    assert (f.name, f.body) == ("f", b"\x00body\xff")


def test_encoders_refuse_bad_arguments():
    with pytest.raises(TypeError):
        _wire.function_call("f", [(0, "not bytes")], "k")
    with pytest.raises(TypeError):
        _wire.dag("d", ["a"], [("a",)])
    with pytest.raises(TypeError):
        _squall.encode_dag_call("d", [("a", [])], "k")


def test_generic_response_and_string_set_decode_and_reject_malformed_bytes():
    r = cb.GenericResponse(success=False, response_id="r", error=3, error_message="m",
                           error_type="t", traceback="tb", executor="1.2.3.4:0")
    got = _wire.parse_generic_response(r.SerializeToString())
    assert got == _wire.GenericResponse(False, "r", 3, "m", "t", "tb", "1.2.3.4:0")
    import shared_pb2
    assert _wire.parse_string_set(shared_pb2.StringSet(keys=["a", "b"]).SerializeToString()) \
        == ["a", "b"]
    for bad in (b"\x12\x05ab", b"\xff", b"\x0b"):
        with pytest.raises(ValueError):
            _wire.parse_generic_response(bad)


def test_decode_value_reads_the_response_id_extension():
    v = cb.Value(body=b"7", type=2)
    raw = v.SerializeToString() + b"\xa2\x06\x03k.1"
    assert _squall.decode_value(raw) == (2, b"7", "k.1")
    assert _squall.decode_value(b"") == (0, b"", "")


def test_responses_receives_tagged_values_and_skips_malformed_ones():
    with _squall.Responses("127.0.0.1") as rx:
        assert rx.address.startswith("tcp://127.0.0.1:")
        t0 = time.monotonic()
        assert rx.recv(0.05) == []
        assert time.monotonic() - t0 >= 0.04
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        try:
            push.connect(rx.address)
            push.send(b"\x0a\x01a\xa2\x06\x02id")
            push.send(b"\xff\xff")
            push.send_multipart([b"\x0a\x01a", b"x"])
            push.send(b"\x0a\x01b")  # untagged, Cloudburst-style
            got, deadline = [], time.monotonic() + 5
            while len(got) < 2 and time.monotonic() < deadline:
                got += rx.recv(0.1)
            assert got == [("id", 0, b"a"), ("", 0, b"b")]
            assert (rx.received, rx.malformed) == (2, 2)
        finally:
            push.close(0)
            ctx.term()
    assert rx.closed
    with pytest.raises(_squall.SquallError):
        rx.recv(0)


def test_responses_wake_makes_a_waiting_recv_return_at_once():
    with _squall.Responses("127.0.0.1") as rx:
        got = []
        waiter = threading.Thread(target=lambda: got.append(rx.recv(10.0)))
        t0 = time.monotonic()
        waiter.start()
        time.sleep(0.2)
        rx.wake()
        waiter.join(5)
        assert got == [[]] and time.monotonic() - t0 < 5
        rx.wake()  # no recv waiting: the next one returns at once, once
        t1 = time.monotonic()
        assert rx.recv(10.0) == [] and time.monotonic() - t1 < 5
        t2 = time.monotonic()
        assert rx.recv(0.1) == [] and time.monotonic() - t2 >= 0.09
    rx.wake()  # after close: harmless


def test_responses_received_by_two_threads_at_once_are_each_whole_and_once():
    """Two threads in recv at the same time (one turning its batch into tuples while
    the other receives the next) each get whole messages, every message exactly once."""
    n = 6000
    sent = {f"id{i}": f"body-{i}-".encode() * (1 + i % 7) for i in range(n)}
    with _squall.Responses("127.0.0.1") as rx:
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        got: list = []
        lock = threading.Lock()

        def receive() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with lock:
                    if len(got) >= n:
                        return
                batch = rx.recv(0.01)
                with lock:
                    got.extend(batch)

        try:
            push.connect(rx.address)
            for rid, body in sent.items():  # queued first: both threads find full batches
                assert len(body) < 128 and len(rid) < 128  # one-byte lengths below
                # Value{body (field 1), response_id (extension 100)}, as in the test above
                push.send(b"\x0a" + bytes([len(body)]) + body +
                          b"\xa2\x06" + bytes([len(rid)]) + rid.encode())
            threads = [threading.Thread(target=receive) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert len(got) == n
            assert sorted(got) == sorted((rid, 0, body) for rid, body in sent.items())
            assert (rx.received, rx.malformed) == (n, 0)
        finally:
            push.close(0)
            ctx.term()


def test_call_meta_template_gives_the_standard_picklers_bytes():
    import pickle
    from squall._callmeta import CallMeta, dump_meta
    for key in ["", "a", "5f0e-12.out.1", "x" * 255, "x" * 256, "\u00e9" * 127, "\u00e9" * 128]:
        kind, body = dump_meta(key)
        assert kind == 0 and body == pickle.dumps(CallMeta(key), protocol=5), key
        assert pickle.loads(body).out_key == key


def test_responses_refuses_an_ip_it_cannot_bind():
    with pytest.raises(_squall.SquallError):
        _squall.Responses("tcp://x")
    with pytest.raises(ValueError):
        _squall.Responses("127.0.0.1", max_bytes=10)


def test_channel_request_drops_a_late_reply_and_pipelines_sends():
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    chan = _squall.Channel(f"tcp://127.0.0.1:{port}")
    try:
        with pytest.raises(_squall.SquallTimeoutError):
            chan.request(b"slow", timeout=0.05)  # nobody answers yet
        assert rep.recv() == b"slow"
        rep.send(b"late")                      # the answer to the request that gave up
        got = []
        t = threading.Thread(target=lambda: got.append(chan.request(b"next", 5)))
        t.start()
        assert rep.recv() == b"next"
        rep.send(b"answer")
        t.join(5)
        assert got == [b"answer"]              # not b"late"
        seqs = [chan.send(b"p%d" % i) for i in range(3)]
        for i in range(3):
            assert rep.recv() == b"p%d" % i
            rep.send(b"r%d" % i)
        replies, deadline = [], time.monotonic() + 5
        while len(replies) < 3 and time.monotonic() < deadline:
            replies += chan.replies()
            time.sleep(0.01)
        assert replies == [(s, b"r%d" % i) for i, s in enumerate(seqs)]
    finally:
        chan.close()
        rep.close(0)
        ctx.term()
    with pytest.raises(_squall.SquallError):
        chan.request(b"x")
