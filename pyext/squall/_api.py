"""The user-facing API: ``@squall.function``, futures, ``squall.dag``, wait/gather.

How a call travels (PROTOCOL.md §3-§4, squall's extensions in docs/README.md)::

    f.remote(x)  --register once (REQ 5001: Function{name, pickle})-->  scheduler
                 --5002: FunctionCall{name, [CallMeta(K.out), x], response_key=K,
                              response_address=A}-->  scheduler  --PUSH-->  executor
                 (sent on a kept channel without waiting; the scheduler's reply is read
                  by the receiver thread and only matters when it is a refusal)
    executor runs f; PUSHes to A: Value{output, response_id=K.out} (if f printed),
                                  then Value{result, response_id=K}
    Future(K)    <--  this process's receiver thread, PULL socket bound at A

A DAG call is the same with a DagCall (response_address=A, output_key=K,
ack_failures_only): every function's executor pushes its captured output to A, the
sink pushes the result; the scheduler replies only if it refuses the call (one send
and one wake-up fewer per call than an acknowledged one).

**Direct response.** Each process binds one PULL socket (``_squall.Responses``, in C:
it waits without the GIL and skips malformed messages) on the address executors reach
it at, and one receiver thread loops on ``recv`` and completes futures by the
response_id squall's executors put in every pushed Value (extension field 100), so any
number of outstanding futures share the socket. Nothing goes through the KVS: no PUT
per result, no polling, and the result is there one network hop after the function
returned. A future passed as an argument to another call is the exception: the
callee reads it from the KVS, so the receiver stores that result under its key when
it arrives (``_Receiver.publish``). Results that land in the KVS by design
(``squall.compat`` calls without direct response, as Cloudburst does it) are polled
with a batched ``get_many`` and backoff (0.5 ms doubling to 4 ms) by the same thread.

No wait hangs forever: every future has a deadline (the call's ``timeout`` option, else
``DEFAULT_CALL_TIMEOUT``, plus ``RESULT_SLACK``) after which the receiver fails it with
``SquallTimeoutError``; ``shutdown`` fails everything outstanding. A timed-out or
crashed call is reported by the worker's supervisor, by push to the same address.
Rescheduling after an executor loss is at-least-once: a second result for a future
already completed is ignored.

Remote failures arrive as ``('ERROR: ...', GenericResponse)``; the client raises the
remote exception's own type when it can import it and build it from the message (else
``RemoteError``), with the remote traceback as ``__cause__`` and a note naming the
executor.

Threads: the receiver thread owns its socket and KvsClient; futures complete (and
their callbacks run) on it. A future is registered before its call is sent, so a reply
can never arrive unclaimed. Registration bookkeeping is guarded by one lock.
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
import functools
import hashlib
import importlib
import itertools
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from . import _cluster, _serialize, _squall, _wire
from ._callmeta import dump_meta

#: Seconds a call may run when no ``timeout`` option is given (the executors' default).
DEFAULT_CALL_TIMEOUT = 300.0
#: Extra seconds a future waits past its call's time limit (scheduling, retries).
RESULT_SLACK = 30.0
#: Seconds to wait for a scheduler reply.
SCHEDULER_TIMEOUT = 30.0
#: KVS polling backoff for results that land in the KVS (compat calls only).
POLL_MIN, POLL_MAX = 0.0005, 0.004
#: Longest wait for a direct response before the receiver looks at deadlines again.
RECV_WAIT = 0.1
#: The same while scheduler replies to pipelined calls are outstanding (refusals).
REPLY_WAIT = 0.005
#: How often deadlines are checked.
EXPIRY_EVERY = 0.05
#: Seconds the receiver thread stays off the socket after a caller blocked in
#: ``result()`` received its own result, so that the next such caller takes over
#: without waking it (``_Receiver.lead``).
LEAD_PAUSE = 0.005
#: A completed future keeps its serialized result up to this size (for publish()).
RAW_KEEP_MAX = 64 * 1024
#: Seconds a DAG's output records are still printed after its result arrived.
OUTPUT_GRACE = 5.0
#: At most this many keys are read per poll round.
POLL_BATCH = 512
LWW = 1

ALL_COMPLETED = cf.ALL_COMPLETED
FIRST_COMPLETED = cf.FIRST_COMPLETED
FIRST_EXCEPTION = cf.FIRST_EXCEPTION


# ---- errors ----------------------------------------------------------------------------

class RemoteError(Exception):
    """A remote function failed with an exception the caller cannot rebuild (its type
    is not importable here, or cannot be made from its message).

    ``type_name`` is the remote ``module.qualname``, ``remote_traceback`` the remote
    traceback text, ``executor`` the executor ("ip:tid") that ran the call.
    """

    def __init__(self, message: str, type_name: str = "", remote_traceback: str = "",
                 executor: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if type_name else message)
        self.type_name = type_name
        self.remote_traceback = remote_traceback
        self.executor = executor


class RemoteTimeoutError(RemoteError, TimeoutError):
    """The call outlived its time limit (``timeout``); its executor was stopped and
    replaced (remote type ``squall.TimeoutError``)."""


class ExecutorCrashed(RemoteError):
    """The process running the call died (segfault, ``os._exit``, out of memory,
    ``kill -9``); the message names the signal or exit code. The node keeps serving."""


class NoExecutors(RemoteError):
    """The call's executor was lost and no executor came back to re-run it within the
    scheduler's ``--resend-wait-ms``."""


#: squall's own failure kinds (GenericResponse.error_type) and the classes raised for them.
SQUALL_ERRORS = {"squall.TimeoutError": RemoteTimeoutError,
                 "squall.ExecutorCrashed": ExecutorCrashed,
                 "squall.NoExecutors": NoExecutors}


class SchedulerError(RuntimeError):
    """The scheduler refused a request; ``error`` is the Cloudburst error name
    (FUNC_NOT_FOUND, NO_RESOURCES, ...) and ``message`` its reason."""

    def __init__(self, what: str, resp: _wire.GenericResponse) -> None:
        self.error = _wire.ERROR_NAMES.get(resp.error, str(resp.error))
        self.message = resp.error_message
        super().__init__(f"{what}: {self.error}" + (f": {self.message}" if self.message else ""))


class _RemoteTraceback(Exception):
    """Carries the remote traceback text as an exception's ``__cause__``."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n\n" + self.tb.rstrip() + "\n"


def _import_type(type_name: str) -> Optional[type]:
    module, _, qual = type_name.rpartition(".")
    if not module or module.startswith("squall"):
        return None
    for cut in range(len(type_name.split(".")) - 1, 0, -1):
        parts = type_name.split(".")
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except Exception:  # noqa: BLE001 -- not importable here
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj if isinstance(obj, type) and issubclass(obj, BaseException) else None
    return None


def remote_exception(resp: _wire.GenericResponse) -> BaseException:
    """The exception to raise for an error record: the remote type when possible."""
    message = resp.error_message or _wire.ERROR_NAMES.get(resp.error, "remote error")
    cls = _import_type(resp.error_type) if resp.error_type else None
    exc: Optional[BaseException] = None
    if cls is not None and not issubclass(cls, (KeyboardInterrupt, SystemExit)):
        try:
            exc = cls(message)
        except Exception:  # noqa: BLE001 -- a constructor that wants other arguments
            exc = None
    if exc is None:
        kind = SQUALL_ERRORS.get(resp.error_type, RemoteError)
        exc = kind(message, resp.error_type, resp.traceback, resp.executor)
    if resp.traceback:
        exc.__cause__ = _RemoteTraceback(resp.traceback)
    where = f"executor {resp.executor}" if resp.executor else "an executor"
    exc.add_note(f"(raised remotely on {where}; the remote traceback is shown above)")
    try:
        exc.remote_traceback = resp.traceback  # type: ignore[attr-defined]
        exc.executor = resp.executor  # type: ignore[attr-defined]
    except AttributeError:
        pass
    return exc


def _error_record(obj: Any) -> Optional[_wire.GenericResponse]:
    """The GenericResponse of an executor's error tuple, or None for a normal value."""
    if not (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str)
            and obj[0].startswith("ERROR") and isinstance(obj[1], (bytes, bytearray))):
        return None
    try:
        resp = _wire.parse_generic_response(bytes(obj[1]))
    except ValueError:
        return None
    if not resp.error_message:
        resp.error_message = obj[0][len("ERROR: "):]
    return resp


# ---- futures ---------------------------------------------------------------------------

class Future(cf.Future):
    """The result of a remote call or DAG call: a ``concurrent.futures.Future``.

    ``result(timeout=None)``, ``exception()``, ``done()``, ``add_done_callback`` work
    as usual; ``await fut`` works in asyncio; ``get()`` is Cloudburst's name for
    ``result()``. ``key`` is the call's response id: its result is pushed to this
    process, and stored in the KVS under ``key`` only when the future is passed to
    another call (or the call was made without a response address). Remote calls
    cannot be cancelled (``cancel()`` returns False). Even ``result()`` without a
    timeout returns: the future fails with ``SquallTimeoutError`` after its deadline.

    Example:

        >>> fut = square.remote(4)               # doctest: +SKIP
        >>> fut.result(timeout=10)               # doctest: +SKIP
        16
    """

    def __init__(self, key: str, receiver: Optional["_Receiver"] = None) -> None:
        super().__init__()
        self.key = key
        self.obj_id = key  # Cloudburst's attribute name
        self._rx = receiver

    def cancel(self) -> bool:
        return False

    def result(self, timeout: Optional[float] = None) -> Any:
        """The call's result, waiting up to ``timeout`` seconds (None: until the
        call's deadline). While it waits, this thread receives the process's direct
        responses itself (``_Receiver.lead``) unless another thread already does."""
        rx = self._rx
        if rx is not None and not self.done():
            start = time.monotonic()
            if rx.lead(self, timeout) and timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - start))
        return super().result(timeout)

    def get(self, timeout: Optional[float] = None) -> Any:
        """Cloudburst's name for ``result``."""
        return self.result(timeout)

    def __await__(self):
        return asyncio.wrap_future(self).__await__()

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<squall.Future {self.key} {state}>"


class _Pending:
    __slots__ = ("future", "deadline", "out_keys", "what", "in_kvs", "publish")

    def __init__(self, future: Future, deadline: float, out_keys: List[str], what: str,
                 in_kvs: bool) -> None:
        self.future, self.deadline, self.out_keys, self.what = future, deadline, out_keys, what
        self.in_kvs = in_kvs    # the result lands in the KVS (no response address)
        self.publish = False    # store the pushed result in the KVS: a call reads it


def _print_output(rec: Any) -> None:
    if not isinstance(rec, dict):
        return
    tag = f"[executor {rec.get('executor', '?')}]"
    for stream, name in ((sys.stdout, "stdout"), (sys.stderr, "stderr")):
        text = rec.get(name) or ""
        if text:
            stream.write("".join(f"{tag} {line}\n" for line in str(text).splitlines()))
            stream.flush()


def _client_ip(host: str) -> str:
    """The local address executors reach this process at: the one the kernel would
    send from towards the scheduler's host (no packet is sent), 127.0.0.1 for loopback;
    ``SQUALL_CLIENT_IP`` overrides it."""
    forced = os.environ.get("SQUALL_CLIENT_IP")
    if forced:
        return forced
    try:
        addr = socket.gethostbyname(host)
        if addr.startswith("127."):
            return "127.0.0.1"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((addr, 9))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class _Receiver:
    """One thread per process that completes every outstanding future.

    Direct responses arrive on ``responses`` (one PULL socket) and are matched by
    response_id: a pending call's key, or one of its output keys. Calls are sent by
    ``send`` on a kept channel per scheduler port without waiting for the scheduler's
    reply; the replies are collected here (``sent`` maps a request's sequence number to
    its key) and a refusal fails the future with ``SchedulerError``. Calls whose
    result lands in the KVS (compat calls without a response address) are polled with
    ``get_many`` and backoff. ``lock`` guards the maps and the channels' send side;
    futures complete (and callbacks run) in the receiving thread, outside the lock.

    Leader/follower: the receiving thread is this one, or a caller blocked in
    ``Future.result`` (``lead``): that caller wakes up with its own result instead
    of this thread waking up and then waking the caller (one thread wake-up less per
    call, measured in docs/executor.md). ``turn`` guards ``leader`` (the thread id of
    that caller) and ``receiving`` (this thread is in a round); one thread receives at
    a time. After a leader leaves, this thread stays off the socket for LEAD_PAUSE
    (unless other futures are pending), so back-to-back ``result()`` calls never wake
    it.
    """

    def __init__(self, cluster: Any) -> None:
        host = cluster.scheduler or _cluster.HOST
        self.cluster = cluster
        # a result up to the largest serialisable value (a larger message would be
        # dropped by the socket and its future would only fail at its deadline)
        self.responses = _squall.Responses(_client_ip(host),
                                           max_bytes=_serialize.MAX_VALUE_BYTES + (1 << 20))
        self.address = self.responses.address
        self.kvs = _squall.KvsClient(cluster.routing, timeout=2.0)
        self.lock = threading.Lock()
        self.pending: Dict[str, _Pending] = {}
        self.outputs: Dict[str, float] = {}      # output key -> expiry (monotonic)
        self.polled: Dict[str, _Pending] = {}    # in_kvs subset of pending
        self.chans: Dict[int, Any] = {}          # scheduler port -> _squall.Channel
        self.sent: Dict[Tuple[int, int], Tuple[str, str]] = {}  # (port, seq) -> key, what
        self.stopped = False
        self.turn = threading.Condition(threading.Lock())
        self.leader: Optional[int] = None
        self.receiving = False
        self.lead_end = 0.0
        self.pause = POLL_MIN
        self.next_expiry = time.monotonic() + EXPIRY_EVERY
        self.thread = threading.Thread(target=self._run, name="squall-results", daemon=True)
        self.thread.start()

    def add(self, key: str, pend: _Pending) -> None:
        with self.lock:
            if self.stopped:
                raise RuntimeError("squall was shut down: call squall.init() again")
            self.pending[key] = pend
            for k in pend.out_keys:
                self.outputs[k] = pend.deadline
            if pend.in_kvs:
                self.polled[key] = pend

    def send(self, port: int, payload: bytes, key: str, what: str) -> None:
        """Sends a call for the pending future of ``key`` to the scheduler's ``port``
        without waiting: the reply is read by this thread, a refusal fails the future."""
        with self.lock:
            if self.stopped:
                raise RuntimeError("squall was shut down: call squall.init() again")
            chan = self.chans.get(port)
            if chan is None:
                if self.cluster.scheduler is None:
                    raise RuntimeError("the cluster has no scheduler: squall-scheduler is "
                                       "not built or not running (`squall status`)")
                chan = self.chans[port] = _squall.Channel(_cluster.scheduler_endpoint(
                    self.cluster.scheduler, self.cluster.port_offset, port))
            self.sent[(port, chan.send(payload))] = (key, what)

    def _replies(self) -> None:
        with self.lock:
            got = [(port, seq, data) for port, chan in self.chans.items()
                   for seq, data in chan.replies()]
            calls = [(self.sent.pop((port, seq), None), data) for port, seq, data in got]
        for call, data in calls:
            if call is None:
                continue
            key, what = call
            try:
                resp = _wire.parse_generic_response(data)
            except ValueError as e:
                self._fail_key(key, SchedulerError(what, _wire.GenericResponse(
                    False, "", 0, f"malformed scheduler reply: {e}", "", "", "")))
                continue
            if not resp.success:
                self._fail_key(key, SchedulerError(what, resp))

    def publish(self, fut: Future) -> None:
        """Makes fut's result readable in the KVS under fut.key (an argument of another
        call): now if it arrived, else as soon as it arrives."""
        with self.lock:
            pend = self.pending.get(fut.key)
            if pend is not None:
                pend.publish = True
                return
        raw = getattr(fut, "_raw", None)
        if raw is None and fut.done() and fut.exception() is None:  # a large result
            raw = _serialize.encode_value(*_serialize.dump(fut.result()))
        if raw is not None:
            self._store(fut.key, raw)

    def _store(self, key: str, raw: bytes) -> None:
        try:
            self.kvs.put(key, LWW, _squall.encode_lww(_squall.lww_timestamp(0), raw))
        except Exception:  # noqa: BLE001 -- the reader times out and says which key
            pass

    def forget(self, key: str) -> None:
        """Drops a pending call whose request the scheduler refused."""
        with self.lock:
            pend = self.pending.pop(key, None)
            self.polled.pop(key, None)
            for k in pend.out_keys if pend is not None else ():
                self.outputs.pop(k, None)

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            left = list(self.pending.values())
            self.pending.clear()
            self.polled.clear()
        for p in left:
            _fail(p.future, RuntimeError(f"{p.what}: squall.shutdown() was called before "
                                         "its result arrived"))
        self.thread.join(5)
        self.responses.close()
        self.kvs.close()
        for chan in self.chans.values():
            chan.close()

    def _wait(self) -> float:
        return self.pause if self.polled else REPLY_WAIT if self.sent else RECV_WAIT

    def _round(self, wait: float) -> None:
        """One round of receiving (up to wait seconds), replies, polling, deadlines;
        raises when the socket was closed by stop()."""
        for rid, kind, body in self.responses.recv(wait):
            self._on_message(rid, kind, body)
        if self.sent:
            self._replies()
        if self.polled:
            found = self._poll()
            self.pause = POLL_MIN if found else min(self.pause * 2, POLL_MAX)
        now = time.monotonic()
        if now >= self.next_expiry:
            self._expire(now)
            self.next_expiry = now + EXPIRY_EVERY

    def _run(self) -> None:
        while not self.stopped:
            with self.turn:
                while not self.stopped and (self.leader is not None or
                                            time.monotonic() < self.lead_end + LEAD_PAUSE):
                    self.turn.wait(LEAD_PAUSE)
                self.receiving = True
            try:
                self._round(self._wait())
            except Exception:  # noqa: BLE001 -- closed by stop()
                return
            finally:
                with self.turn:
                    self.receiving = False
                    self.turn.notify_all()

    def lead(self, fut: Future, timeout: Optional[float]) -> bool:
        """Receives in this thread until fut is done or timeout seconds passed, when no
        other thread leads (and this is not the receiver thread); False if another
        does (the caller then waits on fut as usual)."""
        me = threading.get_ident()
        with self.turn:
            if self.leader is not None or self.stopped or me == self.thread.ident:
                return False
            self.leader = me
            if self.receiving:  # the receiver thread is in a round: cut it short
                self.responses.wake()
                while self.receiving:
                    self.turn.wait()
        end = None if timeout is None else time.monotonic() + timeout
        try:
            while not fut.done():
                left = RECV_WAIT if end is None else end - time.monotonic()
                if left <= 0:
                    break
                self._round(min(left, self._wait()))
        except Exception:  # noqa: BLE001 -- closed by stop(), which fails fut
            pass
        finally:
            with self.turn:
                self.leader = None
                if self.pending:  # other futures wait: the receiver thread resumes now
                    self.lead_end = 0.0
                    self.turn.notify_all()
                else:  # a waiting receiver thread is not woken (LEAD_PAUSE)
                    self.lead_end = time.monotonic()
        return True

    def _on_message(self, rid: str, kind: int, body: bytes) -> None:
        with self.lock:
            pend = self.pending.pop(rid, None)
            if pend is None:
                is_output = rid in self.outputs
            else:
                self.polled.pop(rid, None)
                for k in pend.out_keys:  # a DAG's other functions may still be heard
                    if len(pend.out_keys) > 1:  # (one executor's output comes first)
                        self.outputs[k] = time.monotonic() + OUTPUT_GRACE
                    else:
                        self.outputs.pop(k, None)
        if pend is not None:
            if pend.publish:
                self._store(rid, _serialize.encode_value(kind, body))
            self._complete(pend, kind, body)
        elif is_output:
            try:
                _print_output(_serialize.load(kind, body))
            except Exception:  # noqa: BLE001 -- output is best effort
                pass
        # else: a duplicate (at-least-once re-send) or a stranger's message: ignored

    def _poll(self) -> bool:
        with self.lock:
            batch = list(self.polled.items())[:POLL_BATCH]
        try:
            got = self.kvs.get_many([k for k, _ in batch])
        except Exception:  # noqa: BLE001 -- a KVS hiccup: try again next round
            return False
        found = False
        for (key, _p), g in zip(batch, got):
            if g is None:
                continue
            found = True
            ltype, payload = g
            if ltype != LWW:
                self._fail_key(key, TypeError(f"the result key {key} holds lattice type {ltype}"))
                continue
            try:
                kind, body, _rid = _squall.decode_value(_squall.decode_lww(payload)[1])
            except Exception as e:  # noqa: BLE001 -- delivered to the caller
                self._fail_key(key, e)
                continue
            self._on_message(key, kind, body)
        return found

    def _fail_key(self, key: str, exc: BaseException) -> None:
        with self.lock:
            pend = self.pending.pop(key, None)
            self.polled.pop(key, None)
        if pend is not None:
            _fail(pend.future, exc)

    def _expire(self, now: float) -> None:
        with self.lock:
            late = [(k, p) for k, p in self.pending.items() if now > p.deadline]
            for k, _p in late:
                self.pending.pop(k, None)
                self.polled.pop(k, None)
            for k in [k for k, t in self.outputs.items() if now > t]:
                del self.outputs[k]
            for s in [s for s, (k, _w) in self.sent.items() if k not in self.pending]:
                del self.sent[s]  # settled without its reply: the reply is not needed
        for _k, p in late:
            _fail(p.future, _squall.SquallTimeoutError(
                f"{p.what}: no result within its deadline (the call's timeout plus "
                f"{RESULT_SLACK:g} s); see `squall logs` for the executors"))

    @staticmethod
    def _complete(p: _Pending, kind: int, body: bytes) -> None:
        if len(body) <= RAW_KEEP_MAX:  # for publish(); a large one is dumped again then
            p.future._raw = _serialize.encode_value(kind, body)
        try:
            value = _serialize.load(kind, body)
        except Exception as e:  # noqa: BLE001 -- delivered to the caller
            _fail(p.future, e)
            return
        err = _error_record(value)
        if err is not None:
            _fail(p.future, remote_exception(err))
        elif not p.future.done():
            p.future.set_result(value)


def _fail(fut: Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


_state: Dict[str, Any] = {"cluster": None, "receiver": None, "registered": {}, "channels": {}}
_lock = threading.Lock()


def _receiver() -> _Receiver:
    cluster = _cluster.current()
    rx = _state["receiver"]
    if rx is not None and _state["cluster"] is cluster:  # the usual case: no lock
        return rx
    with _lock:
        if _state["cluster"] is not cluster:
            _reset_locked()
            _state["receiver"] = _Receiver(cluster)
            _state["cluster"] = cluster
        return _state["receiver"]


def _reset_locked() -> None:
    old, chans = _state["receiver"], _state["channels"]
    _state.update(cluster=None, receiver=None, registered={}, channels={})
    for chan in chans.values():
        chan.close()
    if old is not None:
        old.stop()


def reset() -> None:
    """Fails every outstanding future and forgets registrations (``squall.shutdown``)."""
    with _lock:
        _reset_locked()


def response_address() -> str:
    """The address executors push this process's results to ("tcp://ip:port")."""
    return _receiver().address


_ids = {"prefix": uuid.uuid4().hex, "counter": itertools.count()}


def _new_ids() -> None:
    _ids.update(prefix=uuid.uuid4().hex, counter=itertools.count())


os.register_at_fork(after_in_child=_new_ids)  # a forked child must not reuse the ids


def _new_key() -> str:
    """A fresh response id (also the KVS key a result is published under): a random
    prefix per process and a counter, 13 us cheaper than a uuid4 per call."""
    return f"{_ids['prefix']}-{next(_ids['counter'])}"


def _submit(key: str, out_keys: List[str], timeout: Optional[float], what: str,
            in_kvs: bool = False) -> Future:
    """The future of a call already sent: completed by a direct response tagged with
    key (or, with in_kvs, when key appears in the KVS)."""
    rx = _receiver()
    fut = Future(key, rx)
    limit = timeout if timeout else DEFAULT_CALL_TIMEOUT
    rx.add(key, _Pending(fut, time.monotonic() + limit + RESULT_SLACK, out_keys, what, in_kvs))
    return fut


def _call(port: int, key: str, out_keys: List[str], timeout: Optional[float],
          what: Tuple[str, str], message: Callable[[str], bytes]) -> Future:
    """Registers the future of ``key`` (what[0] names it), then sends
    ``message(response_address)`` to the scheduler's ``port`` without waiting (a
    refusal fails the future with SchedulerError naming what[1])."""
    fut = _submit(key, out_keys, timeout, what[0])
    rx = _receiver()
    try:
        rx.send(port, message(rx.address), key, what[1])
    except BaseException:
        rx.forget(key)
        raise
    return fut


def wait(futures: Iterable[Future], timeout: Optional[float] = None,
         return_when: str = ALL_COMPLETED) -> Tuple[set, set]:
    """``(done, not_done)`` sets once ``return_when`` holds (ALL_COMPLETED,
    FIRST_COMPLETED or FIRST_EXCEPTION) or ``timeout`` seconds have passed.

    Example:

        >>> done, pending = squall.wait([f.remote(1), f.remote(2)], timeout=5)  # doctest: +SKIP
    """
    return cf.wait(list(futures), timeout=timeout, return_when=return_when)


def gather(futures: Iterable[Future], timeout: Optional[float] = None) -> List[Any]:
    """The results of ``futures`` in their order; raises the first failure (in order).
    ``timeout`` bounds the whole wait (``SquallTimeoutError`` when it passes).

    Example:

        >>> squall.gather([square.remote(i) for i in range(3)])   # doctest: +SKIP
        [0, 1, 4]
    """
    futs = list(futures)
    deadline = None if timeout is None else time.monotonic() + timeout
    out = []
    for f in futs:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            out.append(f.result(left))
        except cf.TimeoutError:
            raise _squall.SquallTimeoutError(
                f"gather: {len(futs) - len(out)} of {len(futs)} results still missing "
                f"after {timeout:g} s") from None
    return out


# ---- the scheduler ---------------------------------------------------------------------

def scheduler_request(port: int, payload: bytes, timeout: float = SCHEDULER_TIMEOUT) -> bytes:
    """One request/reply exchange with the scheduler's ``port`` (5000..5006, no offset)
    on a connection kept per port (``_squall.Channel``)."""
    cluster = _cluster.current()
    if cluster.scheduler is None:
        raise RuntimeError("the cluster has no scheduler: squall-scheduler is not built or "
                           "not running (`squall status` shows the daemons)")
    ep = _cluster.scheduler_endpoint(cluster.scheduler, cluster.port_offset, port)
    with _lock:
        chan = _state["channels"].get(ep)
        if chan is None:  # kept open: a call costs one round trip, not a connect
            chan = _state["channels"][ep] = _squall.Channel(ep)
    return chan.request(payload, timeout=timeout)


def scheduler_call(port: int, payload: bytes, what: str) -> _wire.GenericResponse:
    """A request answered by a GenericResponse; SchedulerError unless it succeeded."""
    resp = _wire.parse_generic_response(scheduler_request(port, payload))
    if not resp.success:
        raise SchedulerError(what, resp)
    return resp


def _ship_by_value(fn: Callable) -> None:
    """Functions of modules the executors cannot import are pickled by value."""
    import cloudpickle
    name = getattr(fn, "__module__", None) or ""
    mod = sys.modules.get(name)
    if mod is None or name == "__main__" or name.split(".")[0] == "squall":
        return
    path = getattr(mod, "__file__", None) or ""
    if "site-packages" in path or "dist-packages" in path or not path:
        return
    if path.startswith(sys.base_prefix) and "/lib/python" in path:
        return  # the standard library
    cloudpickle.register_pickle_by_value(mod)


def register_object(name: str, obj: Any) -> str:
    """Registers ``obj`` (a callable, or Cloudburst's ``(Class, init_args)``) as
    ``name``; returns the digest of its pickle. SchedulerError when refused."""
    body = _serialize.encode_value(*_serialize.dump(obj))
    scheduler_call(5001, _wire.function(name, body), f"registering {name!r}")
    return hashlib.sha256(body).hexdigest()


# ---- functions ---------------------------------------------------------------------------

_LIBRARY: contextvars.ContextVar = contextvars.ContextVar("squall_library", default=None)


class _Wrapped:
    """What ``@squall.function`` registers: the executor calls it as
    ``wrapped(user_library, *args)``; it makes the library ``squall.context()`` for
    the call and calls the user's function with ``args`` alone."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def __call__(self, lib: Any, *args: Any) -> Any:
        token = _LIBRARY.set(lib)
        try:
            return self.fn(*args)
        finally:
            _LIBRARY.reset(token)


class _LocalLibrary:
    """``squall.context()`` outside an executor: get/put through this process's node
    cache when it has one, else its KVS client, so a function called locally
    (``f(x)``) behaves as it would remotely and reads its own writes."""

    def get(self, key: str, deserialize: bool = True) -> Any:
        """The value stored under ``key`` (None when missing)."""
        from . import get as _get
        try:
            return _get(key)
        except KeyError:
            return None

    def put(self, key: str, value: Any) -> bool:
        """Stores ``value`` under ``key`` (LWW)."""
        from . import _clientcache
        body = _serialize.encode_value(*_serialize.dump(value))
        _clientcache.store(_cluster.current(), key, LWW,
                           _squall.encode_lww(_squall.lww_timestamp(0), body))
        return True

    def getid(self) -> Tuple[str, int]:
        """``("local", 0)``: a local call has no executor identity."""
        return ("local", 0)


def context() -> Any:
    """The user library of the running call: ``get(key)``, ``put(key, value)``,
    ``getid()``, ``send(dest, data)``, ``recv()`` (Cloudburst's ``user_library``).

    Inside a ``@squall.function`` running on an executor this is the executor's
    library; called anywhere else it is a local stand-in with ``get``/``put`` through
    this process's KVS client.

    Example:

        >>> @squall.function
        ... def remember(key, value):
        ...     squall.context().put(key, value)
        ...     return squall.context().get(key)
    """
    lib = _LIBRARY.get()
    return lib if lib is not None else _LocalLibrary()


def _argument(a: Any) -> Tuple[int, bytes]:
    if isinstance(a, Future):  # by reference: the executor waits for the key to exist
        from ._reference import CloudburstReference
        _receiver().publish(a)  # a pushed result is stored there once it arrives
        a = CloudburstReference(a.key)
    return _serialize.dump(a)


class _TextProgress:
    """A one-line progress counter on stderr, for when tqdm is not installed."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.n, self.last, self.shown = total, desc, 0, 0.0, -1
        self._show(force=True)

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.shown != self.n and (force or now - self.last > 0.1):
            sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total}")
            sys.stderr.flush()
            self.last, self.shown = now, self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        self._show(force=self.n == self.total)

    def close(self) -> None:
        self._show(force=True)
        sys.stderr.write("\n")
        sys.stderr.flush()


def _progress_bar(total: int, desc: str) -> Any:
    try:
        from tqdm.auto import tqdm  # notebook widgets in Jupyter, text elsewhere
    except ImportError:
        return _TextProgress(total, desc)
    return tqdm(total=total, desc=desc)


class RemoteFunction:
    """A function that runs on the cluster (made by ``@squall.function``).

    ``f(*args)`` still runs it here; ``f.remote(*args)`` runs it on an executor and
    returns a ``Future``; ``f.map(items)`` runs it once per item; ``f >> g`` makes a
    DAG. It is registered under ``name`` on its first remote use, and again whenever a
    function with another body was registered under that name by this process.
    """

    def __init__(self, fn: Callable, name: Optional[str] = None,
                 timeout: Optional[float] = None) -> None:
        if not callable(fn):
            raise TypeError(f"squall.function needs a callable, not {type(fn).__name__}")
        functools.update_wrapper(self, fn)
        self._fn = fn
        self.name = name or f"{fn.__module__}.{fn.__qualname__}"
        self.timeout = timeout
        self._body: Optional[bytes] = None
        self._digest = ""  # sha256 of _body, computed once with it

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<squall.function {self.name}>"

    def options(self, *, name: Optional[str] = None,
                timeout: Optional[float] = None) -> "RemoteFunction":
        """A copy with other options (``name``, ``timeout`` in seconds)."""
        return RemoteFunction(self._fn, name or self.name,
                              timeout if timeout is not None else self.timeout)

    def _ensure_registered(self) -> None:
        if self._body is None:
            _ship_by_value(self._fn)
            self._body = _serialize.encode_value(*_serialize.dump(_Wrapped(self._fn)))
            self._digest = hashlib.sha256(self._body).hexdigest()
        _receiver()
        if _state["registered"].get(self.name) == self._digest:
            return
        scheduler_call(5001, _wire.function(self.name, self._body),
                       f"registering function {self.name!r}")
        with _lock:
            _state["registered"][self.name] = self._digest

    def remote(self, *args: Any) -> Future:
        """Runs the function on an executor; returns its ``Future`` at once.

        Arguments are pickled; ``squall.Ref`` arguments (from ``squall.put``) are
        replaced by their values on the executor, and so are other calls' futures.
        The call is sent without waiting for the scheduler: if it refuses (no live
        executor, unknown function), the future fails with ``SchedulerError``.

        Example:

            >>> @squall.function
            ... def square(x):
            ...     return x * x
            >>> square.remote(3).result()        # doctest: +SKIP
            9
        """
        self._ensure_registered()
        key = _new_key()
        out = key + ".out"
        values = [dump_meta(out)] + [_argument(a) for a in args]
        ms = int(self.timeout * 1000) if self.timeout else 0
        return _call(5002, key, [out], self.timeout, (f"{self.name}()", f"calling {self.name!r}"),
                     lambda addr: _wire.function_call(self.name, values, key, ms, addr))

    def map(self, items: Iterable[Any], progress: bool = False,
            timeout: Optional[float] = None) -> List[Any]:
        """``[f(x) for x in items]`` computed remotely, all calls outstanding at once;
        results in the order of ``items``. ``progress=True`` shows a progress bar
        (tqdm.auto when installed: a widget in notebooks; else a counter on stderr).
        Raises the first failure; ``timeout`` bounds the whole wait.

        Example:

            >>> square.map(range(4), progress=True)   # doctest: +SKIP
            [0, 1, 4, 9]
        """
        futs = [self.remote(x) for x in items]
        if progress:
            bar = _progress_bar(len(futs), self.name)
            try:
                for _ in cf.as_completed(futs, timeout=timeout):
                    bar.update(1)
            except cf.TimeoutError:
                pass  # gather below says how many are missing
            finally:
                bar.close()
        return gather(futs, timeout=0 if progress and timeout is not None else timeout)

    def __rshift__(self, other: "RemoteFunction | Dag") -> "Dag":
        return Dag._chain(self, other)


def function(fn: Optional[Callable] = None, *, name: Optional[str] = None,
             timeout: Optional[float] = None) -> Any:
    """Decorator: makes ``fn`` a ``RemoteFunction`` (``fn.remote(...)`` -> Future).

    Options: ``name`` (the registered name; default ``module.qualname``) and
    ``timeout`` (seconds a call may run; the executor stops it after that and the
    future fails). The function takes its arguments only; inside it,
    ``squall.context()`` is the user library (KVS get/put, messaging).

    Example:

        >>> @squall.function
        ... def square(x):
        ...     return x * x
        >>> square(3)                            # still an ordinary function
        9
        >>> squall.gather([square.remote(i) for i in range(3)])   # doctest: +SKIP
        [0, 1, 4]
        >>> @squall.function(timeout=5)
        ... def quick(x):
        ...     return x
    """
    def wrap(f: Callable) -> RemoteFunction:
        return RemoteFunction(f, name=name, timeout=timeout)
    return wrap(fn) if fn is not None else wrap


# ---- DAGs --------------------------------------------------------------------------------

def _as_remote(f: Any) -> RemoteFunction:
    if isinstance(f, RemoteFunction):
        return f
    if callable(f):
        return RemoteFunction(f)
    raise TypeError(f"a DAG is made of functions, not {type(f).__name__}")


class Dag:
    """A DAG of remote functions, registered once and called many times.

    Data flows along ``connections`` (source, sink): a function receives its fixed
    arguments first, then each upstream result in the order of its connections (a
    tuple result counts as several arguments, Cloudburst's rule). There must be
    exactly one sink; its result is the DAG's. ``remote(*args)`` gives ``args`` to
    every source function; ``remote(args={f: (...), ...})`` gives each function its
    own fixed arguments. ``dag(*args)`` runs it locally, in this process.

    The registered name is ``<name>-<digest of functions and connections>``, so a DAG
    whose shape changes is registered anew instead of clashing with the old one.

    Example:

        >>> pipeline = squall.dag("stats", [(load, mean)])    # doctest: +SKIP
        >>> pipeline.remote(ref).result()                     # doctest: +SKIP
        >>> (load >> mean).remote(ref).result()               # the same DAG, chained
    """

    def __init__(self, name: str, connections: Sequence[Tuple[Any, Any]],
                 functions: Sequence[Any] = ()) -> None:
        self.functions: List[RemoteFunction] = []
        self.connections: List[Tuple[RemoteFunction, RemoteFunction]] = []
        byname: Dict[str, RemoteFunction] = {}
        for f in [x for edge in connections for x in edge] + list(functions):
            r = _as_remote(f)
            if byname.setdefault(r.name, r) is r and r not in self.functions:
                self.functions.append(r)
        for a, b in connections:
            self.connections.append((byname[_as_remote(a).name], byname[_as_remote(b).name]))
        self.order = self._topological()
        sinks = [f for f in self.functions if not any(a is f for a, _ in self.connections)]
        if len(sinks) != 1:
            raise ValueError(f"DAG {name!r} has {len(sinks)} sinks "
                             f"({', '.join(f.name for f in sinks)}); it needs exactly one")
        self.sink = sinks[0]
        self.sources = [f for f in self.functions if not any(b is f for _, b in self.connections)]
        shape = repr(([f.name for f in self.functions],
                      [(a.name, b.name) for a, b in self.connections]))
        self.base_name = name
        self.name = f"{name}-{hashlib.sha256(shape.encode()).hexdigest()[:12]}"

    def _topological(self) -> List[RemoteFunction]:
        indeg = {id(f): 0 for f in self.functions}
        for _a, b in self.connections:
            indeg[id(b)] += 1
        ready = [f for f in self.functions if indeg[id(f)] == 0]
        order: List[RemoteFunction] = []
        while ready:
            f = ready.pop(0)
            order.append(f)
            for a, b in self.connections:
                if a is f:
                    indeg[id(b)] -= 1
                    if indeg[id(b)] == 0:
                        ready.append(b)
        if len(order) != len(self.functions):
            raise ValueError("the DAG's connections form a cycle")
        return order

    @classmethod
    def _chain(cls, left: Any, right: Any) -> "Dag":
        lf = left if isinstance(left, Dag) else None
        rf = right if isinstance(right, Dag) else None
        edges = list(lf.connections) if lf else []
        fns = list(lf.functions) if lf else [_as_remote(left)]
        tail = lf.sink if lf else _as_remote(left)
        names = {f.name for f in fns}
        for f in (rf.functions if rf else [_as_remote(right)]):
            if f.name in names:
                raise ValueError(f"{f.name} is already in this DAG (a DAG node is a function "
                                 "name); add a copy with f.options(name='other-name')")
        if rf is None:
            head = _as_remote(right)
            edges.append((tail, head))
            fns.append(head)
        else:
            edges += [(tail, s) for s in rf.sources] + list(rf.connections)
            fns += rf.functions
        name = lf.base_name if lf else "pipeline"
        return cls(name, edges, fns)

    def __rshift__(self, other: Any) -> "Dag":
        return Dag._chain(self, other)

    def __repr__(self) -> str:
        edges = ", ".join(f"{a.name} -> {b.name}" for a, b in self.connections)
        return f"<squall.Dag {self.name}: {edges or self.sink.name}>"

    def _ensure_registered(self) -> None:
        for f in self.functions:
            f._ensure_registered()
        key = "dag:" + self.name
        if _state["registered"].get(key):
            return
        msg = _wire.dag(self.name, [f.name for f in self.functions],
                        [(a.name, b.name) for a, b in self.connections])
        try:
            scheduler_call(5004, msg, f"registering DAG {self.name!r}")
        except SchedulerError as e:
            if e.error != "DAG_ALREADY_EXISTS":  # the same shape, registered before
                raise
        with _lock:
            _state["registered"][key] = True

    def _fixed_args(self, args: Sequence[Any], per: Optional[Mapping[Any, Sequence[Any]]]
                    ) -> Dict[str, List[Any]]:
        per_name = {(_as_remote(k).name if not isinstance(k, str) else k): list(v)
                    for k, v in (per or {}).items()}
        return {f.name: per_name.get(f.name, list(args) if f in self.sources else [])
                for f in self.functions}

    def remote(self, *args: Any, args_by_function: Optional[Mapping[Any, Sequence[Any]]] = None,
               timeout: Optional[float] = None) -> Future:
        """Calls the DAG on the cluster; returns the ``Future`` of the sink's result.
        ``timeout`` (seconds) limits each function's run.

        Example:

            >>> (parse >> count).remote("some text").result()   # doctest: +SKIP
        """
        self._ensure_registered()
        key = _new_key()
        fixed = self._fixed_args(args, args_by_function)
        outs = {f.name: f"{key}.out.{i}" for i, f in enumerate(self.order)}
        fargs = {n: [dump_meta(outs[n])] + [_argument(a) for a in v]
                 for n, v in fixed.items()}
        ms = int(timeout * 1000) if timeout else 0
        return _call(5005, key, [outs[f.name] for f in self.order], timeout,
                     (f"DAG {self.base_name}", f"calling DAG {self.name!r}"),
                     lambda addr: _wire.dag_call(self.name, fargs, key, ms, addr, True))

    def __call__(self, *args: Any, args_by_function: Optional[Mapping[Any, Sequence[Any]]] = None
                 ) -> Any:
        """Runs the DAG here, function by function in topological order."""
        fixed = self._fixed_args(args, args_by_function)
        results: Dict[str, Any] = {}
        for f in self.order:
            fargs = list(fixed[f.name])
            for a, b in self.connections:
                if b is f:
                    r = results[a.name]
                    fargs.extend(r if isinstance(r, tuple) else [r])
            results[f.name] = f(*fargs)
        return results[self.sink.name]

    def delete(self) -> None:
        """Deletes the DAG from the cluster (its functions stay registered)."""
        scheduler_call(5006, self.name.encode(), f"deleting DAG {self.name!r}")
        with _lock:
            _state["registered"].pop("dag:" + self.name, None)


def dag(name: str, connections: Sequence[Tuple[Any, Any]], functions: Sequence[Any] = ()) -> Dag:
    """A DAG named ``name`` with edges ``connections`` [(source, sink), ...] between
    ``@squall.function``s; ``functions`` adds functions without edges (a one-function
    DAG). See ``Dag``; ``f >> g >> h`` builds the same chain.

    Example:

        >>> d = squall.dag("fan-in", [(left, join), (right, join)])   # doctest: +SKIP
        >>> d.remote(x).result()              # join(left(x), right(x))  # doctest: +SKIP
    """
    return Dag(name, connections, functions)
