#!/usr/bin/env python3
"""bench/composition_bench.py: function composition on squall, Ray, Dask and a ZeroMQ floor.

Workloads, from one Python client, warm (functions registered and called first):
  a   one call of `square` (latency)
  b   the two-function DAG square -> increment, result sent straight to the client
  c   a linear chain of 10 functions (DAG), result sent straight to the client
  d   sequential calls of `square` per second (one at a time, back to back)
  e   pipelined calls of `square` per second (`--inflight` outstanding, default 100)

Systems, each in its own child process (its imports, threads and daemons die with it):
  squall  a local cluster (squall-kvs, -cache, -scheduler, -worker with `--executors`
          executors) started with squall._cluster.up in a temp dir, driven through the
          Cloudburst protocol (tests/python/cb_harness.py): DagCall with a direct
          response address, sent as squall's own client sends it (DEALER, no wait for
          the scheduler's reply, squall extension ack_failures_only: the scheduler
          answers only refusals -- like for like with squall's Channel); (a) also as
          Cloudburst's one-shot FunctionCall (REQ) whose result is read back from the
          KVS ("a_kvs").
  ray     ray.init(num_cpus=E), remote functions, chained ObjectRefs.
  dask    LocalCluster(n_workers=E, threads_per_worker=1), client.submit chains.
  floor   bare ZeroMQ PUSH/PULL relays (zmq.proxy, i.e. libzmq's C loop) through as many
          processes as squall's path has hops: a = client -> scheduler -> executor ->
          client (3 hops), b = client -> scheduler -> f -> g -> client (4 hops), c =
          client -> scheduler -> f1 -> ... -> f10 -> client (12 hops); d/e over b's path
          length of a (3 hops).

squall is also measured through its own Python API (rows a_api, b_api, e_api): the same
cluster, ``@squall.function`` / ``squall.dag`` futures with ``.result()``, i.e. what a
user gets (CallMeta output capture, the client's receiver thread, direct responses).

Invariants: every process started here is stopped on the way out (success, error,
timeout, Ctrl-C, SIGTERM): children run in their own session and are killed as a group;
squall's cluster is stopped with squall._cluster.down. A peer that cannot be imported or
started is reported as unavailable, never fails the run. Latencies are microseconds
from sending the request to having the result in the client.

Output: progress on stderr; stdout is the table and, as its last line, one JSON object.
Threads: single-threaded (Ray and Dask run their own threads in their child process).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("squall", "ray", "dask", "floor")
WORKLOADS = ("a", "b", "c", "d", "e")
HOPS = {"a": 3, "b": 4, "c": 12, "d": 3, "e": 3}
# squall issue 5's targets: b's p50 <= 1/4 Ray's, <= 1/10 Dask's, <= 2x the floor;
# e's throughput >= 3x Ray's.
TARGETS = {"b_p50_vs_ray_max": 0.25, "b_p50_vs_dask_max": 0.1, "b_p50_vs_floor_max": 2.0,
           "e_throughput_vs_ray_min": 3.0}


def log(msg: str) -> None:
    print(f"composition: {msg}", file=sys.stderr, flush=True)


# ---- the functions (module level: pickled by value as members of __main__) ----------

def square(_lib, x):
    return x * x


def increment(_lib, x):
    return x + 1


def p_square(x):
    return x * x


def p_increment(x):
    return x + 1


# ---- measurement ---------------------------------------------------------------------

def percentile(sorted_us: list[float], q: float) -> float:
    if not sorted_us:
        return float("nan")
    i = min(len(sorted_us) - 1, max(0, int(round(q * (len(sorted_us) - 1)))))
    return sorted_us[i]


# Latency samples a child hands to the parent for merging rounds (above this count, as
# in the pipelined workloads, the rounds' quantiles are averaged instead).
SAMPLES_KEPT_MAX = 10000


def latency_figures(samples_us: list[float]) -> dict:
    s = sorted(samples_us)
    out = {"n": len(s), "p50_us": round(percentile(s, 0.5), 1),
           "p99_us": round(percentile(s, 0.99), 1),
           "mean_us": round(sum(s) / len(s), 1) if s else None}
    if len(s) <= SAMPLES_KEPT_MAX:
        out["samples_us"] = [round(x, 1) for x in s]
    return out


def merge_workload(parts: list[dict]) -> dict:
    """One workload's figures from several rounds: latency quantiles of the pooled
    samples (or, where a round kept none, the rounds' quantiles weighted by their
    counts), calls per second as all calls over all measured seconds."""
    out = {k: v for k, v in parts[0].items() if k != "samples_us"}
    if all("samples_us" in p for p in parts):
        out.update(latency_figures([x for p in parts for x in p["samples_us"]]))
        out.pop("samples_us", None)
    else:
        n = sum(p["n"] for p in parts) or 1
        for k in ("p50_us", "p99_us", "mean_us"):
            if all(p.get(k) is not None for p in parts):
                out[k] = round(sum(p[k] * p["n"] for p in parts) / n, 1)
        out["n"] = sum(p["n"] for p in parts)
        out["quantiles"] = "count-weighted mean of the rounds'"
    if "calls" in parts[0]:
        calls, secs = sum(p["calls"] for p in parts), sum(p["seconds"] for p in parts)
        out.update(calls=calls, seconds=round(secs, 3),
                   calls_per_s=round(calls / secs, 1) if secs else None)
    return out


def merge_rounds(rounds: list[dict]) -> dict:
    """A system's figures from its rounds (each a child's result); unavailable when any
    round was."""
    for r in rounds:
        if "unavailable" in r:
            return r
    out = dict(rounds[0])
    for w, f in rounds[0].items():
        if isinstance(f, dict) and "p50_us" in f:
            out[w] = merge_workload([r[w] for r in rounds if w in r])
    out["rounds"] = len(rounds)
    return out


def strip_samples(results: dict) -> dict:
    """results without the raw samples (the parent's JSON keeps the figures only)."""
    return {sysname: {w: ({k: v for k, v in f.items() if k != "samples_us"}
                          if isinstance(f, dict) else f) for w, f in res.items()}
            for sysname, res in results.items()}


def run_order(systems: list[str], rounds: int) -> list[str]:
    """The order children run in. squall and the floor are compared against each other
    (the b / floor target), so with rounds > 1 they run in alternating rounds around the
    others: squall, floor, ray, dask, floor, squall. The host's speed drifts within
    minutes; one run each, minutes apart, let the drift decide the ratio."""
    paired = [s for s in ("squall", "floor") if s in systems]
    others = [s for s in systems if s not in paired]
    if rounds <= 1 or len(paired) < 2:
        return list(systems)
    first, second = [], []
    for k in range(rounds):
        (first if k < (rounds + 1) // 2 else second).extend(
            paired if k % 2 == 0 else paired[::-1])
    return first + others + second


def measure_latency(one, args, check) -> dict:
    """Runs `one(i)` (returns the result) until `--samples` or `--latency-seconds`,
    after `--warmup-calls` unmeasured calls; check(i, result) must hold for each."""
    for i in range(args.warmup_calls):
        r = one(i)
        if not check(i, r):
            raise RuntimeError(f"wrong result {r!r} for input {i}")
    out = []
    deadline = time.monotonic() + args.latency_seconds
    i = 0
    while i < args.samples and time.monotonic() < deadline:
        t0 = time.perf_counter_ns()
        r = one(i)
        out.append((time.perf_counter_ns() - t0) / 1000)
        if not check(i, r):
            raise RuntimeError(f"wrong result {r!r} for input {i}")
        i += 1
    return latency_figures(out)


def measure_sequential(one, args) -> dict:
    """Back-to-back calls for `--throughput-seconds`: calls per second."""
    n = 0
    t0 = time.perf_counter()
    end = t0 + args.throughput_seconds
    lat = []
    while True:
        s = time.perf_counter_ns()
        r = one(n)
        lat.append((time.perf_counter_ns() - s) / 1000)
        if r != n * n:
            raise RuntimeError(f"wrong result {r!r} for input {n}")
        n += 1
        if time.perf_counter() >= end:
            break
    el = time.perf_counter() - t0
    return dict(latency_figures(lat), calls=n, seconds=round(el, 3),
                calls_per_s=round(n / el, 1))


def pipelined_figures(n: int, elapsed: float, lat: list[float], inflight: int) -> dict:
    return dict(latency_figures(lat), calls=n, seconds=round(elapsed, 3),
                calls_per_s=round(n / elapsed, 1), inflight=inflight)


# ---- squall ---------------------------------------------------------------------------

def squall_bin_dir() -> Path | None:
    env = os.environ.get("SQUALL_BIN_DIR")
    for cand in ([Path(env)] if env else []) + [ROOT / "build" / "release" / "bin"]:
        if (cand / "squall-worker").is_file():
            return cand
    return None


def free_offset(executors: int) -> int:
    """A port offset (multiple of 100) with every port of a local cluster free."""
    for _ in range(100):
        off = random.randrange(100, 20000, 100)
        ports = [6450 + off, 6200 + off, 6201 + off, 7150 + off]
        ports += [5000 + off + p for p in range(12)]
        ports += [b + off + t for b in (4000, 4010, 4020, 4030, 4040, 4050, 5500)
                  for t in range(executors)]
        if all(_port_free(p) for p in ports):
            return off
    raise RuntimeError("no free port range for a squall cluster")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class SquallDriver:
    """Cloudburst-protocol DagCalls against a local cluster, sent as squall's own client
    sends them: on a DEALER (REP-compatible framing) without waiting for the
    scheduler's reply, each with its own output key and the squall extension
    ``ack_failures_only`` (the scheduler answers only a refusal); the result arrives
    on the PULL socket (direct response). A reply on the DEALER is read whenever one
    is there: a refusal raises, an acknowledgement (from a scheduler that does not
    know the extension) is dropped."""

    def __init__(self, client, cb, load, dump, offset: int):
        import zmq
        self.c, self.cb, self.load, self.dump = client, cb, load, dump
        self.dealer = client.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(f"tcp://127.0.0.1:{5005 + offset}")
        self.zmq = zmq
        self.poller = zmq.Poller()
        self.poller.register(client.pull, zmq.POLLIN)
        self.poller.register(self.dealer, zmq.POLLIN)
        self.seq = 0

    def dag_call_bytes(self, dag: str, source: str, x: int) -> bytes:
        self.seq += 1
        c = self.cb.DagCall(name=dag, response_address=self.c.response_address,
                            output_key=f"bench-{self.seq}", ack_failures_only=True)
        c.function_args[source].values.append(self.dump(x))
        return c.SerializeToString()

    def replies(self) -> None:
        """Reads every scheduler reply waiting on the DEALER; raises on a refusal."""
        while self.dealer.poll(0):
            r = self.cb.GenericResponse()
            r.ParseFromString(self.dealer.recv_multipart()[-1])
            if not r.success:
                raise RuntimeError(f"DagCall refused: {r.error_message}")

    def call_dag(self, dag: str, source: str, x: int):
        """One DagCall; waits on the PULL socket alone (a refusal, which means no
        result will come, is looked for on the DEALER every 100 ms)."""
        self.dealer.send_multipart([b"", self.dag_call_bytes(dag, source, x)])
        pull = self.c.pull
        for _ in range(100):
            if pull.poll(100):
                v = self.cb.Value()
                v.ParseFromString(pull.recv())
                return self.load(v)
            self.replies()
        raise TimeoutError("no direct response within 10 s")

    def pipelined(self, dag: str, source: str, seconds: float, inflight: int) -> dict:
        """Keeps `inflight` DagCalls outstanding for `seconds`; results are matched to
        calls by value (square(i) = i*i is unique)."""
        pull = self.c.pull
        sent: dict[int, int] = {}
        lat: list[float] = []
        nxt = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            now = time.perf_counter()
            while now < end and len(sent) < inflight:
                sent[nxt * nxt] = time.perf_counter_ns()
                self.dealer.send_multipart([b"", self.dag_call_bytes(dag, source, nxt)])
                nxt += 1
            if not sent:
                break
            ready = dict(self.poller.poll(10000))
            if not ready:
                raise RuntimeError(f"{len(sent)} pipelined calls unanswered for 10 s")
            if self.dealer in ready:
                self.replies()
            if pull in ready:
                while pull.poll(0):
                    v = self.cb.Value()
                    v.ParseFromString(pull.recv())
                    res = self.load(v)
                    t = sent.pop(res, None)
                    if t is None:
                        raise RuntimeError(f"unexpected result {res!r}")
                    lat.append((time.perf_counter_ns() - t) / 1000)
        return pipelined_figures(len(lat), time.perf_counter() - t0, lat, inflight)


def squall_call_kvs(drv: SquallDriver, kvs, x: int, seq: list[int]):
    """Cloudburst's one-shot call: FunctionCall to 5002 with a response key, then GETs
    of that key (an LWW holding the serialized Value) until it exists."""
    import squall._squall as sq
    seq[0] += 1
    key = f"bench-{os.getpid()}-{seq[0]}"
    drv.c.call("square", [x], response_key=key)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            _, payload = kvs.get(key)
        except sq.KeyNotFoundError:
            continue
        v = drv.cb.Value()
        v.ParseFromString(sq.decode_lww(payload)[1])
        return drv.load(v)
    raise RuntimeError(f"no result under {key} within 10 s")


def run_squall(args) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "python"))
    bins = squall_bin_dir()
    if bins is None:
        raise RuntimeError("squall-worker not found: run `make build` or set SQUALL_BIN_DIR")
    os.environ["SQUALL_BIN_DIR"] = str(bins)
    from squall import _cluster
    import squall._squall as sq
    import cb_harness as H
    home = Path(tempfile.mkdtemp(prefix="squall-bench-comp-"))
    offset = free_offset(args.executors)
    log(f"squall: starting a cluster ({args.executors} executors, {bins}, offset {offset})")
    try:
        st = _cluster.up(home=home, executors=args.executors, port_offset=offset,
                         timeout=60.0)
        with H.CloudburstClient(offset=offset, timeout=15.0) as c:
            out = squall_workloads(args, c, H, sq, st, offset)
        out.update(squall_api_workloads(args, home, offset))
        return out
    finally:
        _cluster.down(home=home, grace=5.0)
        import shutil
        shutil.rmtree(home, ignore_errors=True)


def squall_workloads(args, c, H, sq, st, offset) -> dict:
    """Registers the functions and DAGs, then measures a, a', b, c, d, e."""
    drv = SquallDriver(c, H.cb, H.load, H.dump, offset)
    try:  # an open socket would make the client's context termination wait forever
        return squall_measure(args, c, drv, sq, st)
    finally:
        drv.dealer.close(0)


def squall_measure(args, c, drv, sq, st) -> dict:
    c.register(square, "square")
    c.register(increment, "increment")
    chain = [f"inc{i}" for i in range(args.chain)]
    for n in chain:
        c.register(increment, n)
    c.register_dag("bench_one", ["square"], [])
    c.register_dag("bench_sq_inc", ["square", "increment"], [("square", "increment")])
    c.register_dag("bench_chain", chain, list(zip(chain, chain[1:])))
    out = {}
    one = lambda i: drv.call_dag("bench_one", "square", i)
    out["a"] = measure_latency(one, args, lambda i, r: r == i * i)
    with sq.KvsClient(st["routing"], timeout=5.0) as kvs:
        seq = [0]
        out["a_kvs"] = measure_latency(lambda i: squall_call_kvs(drv, kvs, i, seq), args,
                                       lambda i, r: r == i * i)
    out["b"] = measure_latency(lambda i: drv.call_dag("bench_sq_inc", "square", i), args,
                               lambda i, r: r == i * i + 1)
    out["c"] = measure_latency(lambda i: drv.call_dag("bench_chain", "inc0", i), args,
                               lambda i, r: r == i + args.chain)
    out["d"] = measure_sequential(one, args)
    out["e"] = drv.pipelined("bench_one", "square", args.throughput_seconds, args.inflight)
    return out


def squall_api_workloads(args, home: Path, offset: int) -> dict:
    """a, b and e through squall's own API on the running cluster."""
    import squall
    squall.init(home=home, port_offset=offset)
    try:
        sq = squall.function(p_square, name="bench.api_square")
        inc = squall.function(p_increment, name="bench.api_increment")
        pipeline = sq >> inc
        out = {}
        out["a_api"] = measure_latency(lambda i: sq.remote(i).result(10), args,
                                       lambda i, r: r == i * i)
        out["b_api"] = measure_latency(lambda i: pipeline.remote(i).result(10), args,
                                       lambda i, r: r == i * i + 1)
        out["e_api"] = squall_api_pipelined(sq, args)
        return out
    finally:
        squall.shutdown()


def squall_api_pipelined(fn, args) -> dict:
    """Keeps `inflight` futures of fn outstanding for `--throughput-seconds`."""
    import queue
    done: queue.SimpleQueue = queue.SimpleQueue()
    lat: list[float] = []
    nxt = outstanding = 0
    t0 = time.perf_counter()
    end = t0 + args.throughput_seconds
    while True:
        while time.perf_counter() < end and outstanding < args.inflight:
            t = time.perf_counter_ns()
            fn.remote(nxt).add_done_callback(lambda f, i=nxt, t=t: done.put((i, t, f)))
            nxt += 1
            outstanding += 1
        if not outstanding:
            break
        i, t, f = done.get(timeout=10)
        outstanding -= 1
        if f.result() != i * i:
            raise RuntimeError(f"squall api: wrong result for {i}")
        lat.append((time.perf_counter_ns() - t) / 1000)
    return pipelined_figures(len(lat), time.perf_counter() - t0, lat, args.inflight)


# ---- Ray ------------------------------------------------------------------------------

def run_ray(args) -> dict:
    import ray
    log(f"ray {ray.__version__}: ray.init(num_cpus={args.executors})")
    ray.init(num_cpus=args.executors, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    try:
        sq = ray.remote(p_square)
        inc = ray.remote(p_increment)
        chain = [ray.remote(p_increment) for _ in range(args.chain)]

        def run_chain(i):
            ref = i
            for f in chain:
                ref = f.remote(ref)
            return ray.get(ref)

        one = lambda i: ray.get(sq.remote(i))
        out = {"version": ray.__version__}
        out["a"] = measure_latency(one, args, lambda i, r: r == i * i)
        out["b"] = measure_latency(lambda i: ray.get(inc.remote(sq.remote(i))), args,
                                   lambda i, r: r == i * i + 1)
        out["c"] = measure_latency(run_chain, args, lambda i, r: r == i + args.chain)
        out["d"] = measure_sequential(one, args)
        out["e"] = ray_pipelined(ray, sq, args)
        return out
    finally:
        ray.shutdown()


def ray_pipelined(ray, sq, args) -> dict:
    pending: dict = {}
    lat: list[float] = []
    nxt = 0
    t0 = time.perf_counter()
    end = t0 + args.throughput_seconds
    while True:
        while time.perf_counter() < end and len(pending) < args.inflight:
            pending[sq.remote(nxt)] = (nxt, time.perf_counter_ns())
            nxt += 1
        if not pending:
            break
        done, _ = ray.wait(list(pending), num_returns=1, timeout=10)
        if not done:
            raise RuntimeError("ray: pipelined calls unanswered for 10 s")
        for ref in done:
            i, t = pending.pop(ref)
            if ray.get(ref) != i * i:
                raise RuntimeError("ray: wrong result")
            lat.append((time.perf_counter_ns() - t) / 1000)
    return pipelined_figures(len(lat), time.perf_counter() - t0, lat, args.inflight)


# ---- Dask -----------------------------------------------------------------------------

def run_dask(args) -> dict:
    import dask
    from dask.distributed import Client, LocalCluster
    log(f"dask {dask.__version__}: LocalCluster(n_workers={args.executors})")
    cluster = LocalCluster(n_workers=args.executors, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    client = Client(cluster)
    try:
        def run_chain(i):
            fut = i
            for _ in range(args.chain):
                fut = client.submit(p_increment, fut, pure=False)
            return fut.result()

        one = lambda i: client.submit(p_square, i, pure=False).result()
        out = {"version": dask.__version__}
        out["a"] = measure_latency(one, args, lambda i, r: r == i * i)
        out["b"] = measure_latency(
            lambda i: client.submit(p_increment, client.submit(p_square, i, pure=False),
                                    pure=False).result(),
            args, lambda i, r: r == i * i + 1)
        out["c"] = measure_latency(run_chain, args, lambda i, r: r == i + args.chain)
        out["d"] = measure_sequential(one, args)
        out["e"] = dask_pipelined(client, args)
        return out
    finally:
        client.close()
        cluster.close()


def dask_pipelined(client, args) -> dict:
    from dask.distributed import as_completed
    lat: list[float] = []
    t0 = time.perf_counter()
    end = t0 + args.throughput_seconds
    started: dict = {}
    ac = as_completed()
    for i in range(args.inflight):
        f = client.submit(p_square, i, pure=False)
        started[f.key] = (i, time.perf_counter_ns())
        ac.add(f)
    nxt = args.inflight
    for f in ac:
        i, t = started.pop(f.key)
        if f.result() != i * i:
            raise RuntimeError("dask: wrong result")
        lat.append((time.perf_counter_ns() - t) / 1000)
        if time.perf_counter() < end:
            g = client.submit(p_square, nxt, pure=False)
            started[g.key] = (nxt, time.perf_counter_ns())
            ac.add(g)
            nxt += 1
    return pipelined_figures(len(lat), time.perf_counter() - t0, lat, args.inflight)


# ---- the ZeroMQ floor -----------------------------------------------------------------

RELAY = """
import sys, zmq
ctx = zmq.Context(1)
a = ctx.socket(zmq.PULL); a.bind(sys.argv[1])
b = ctx.socket(zmq.PUSH); b.connect(sys.argv[2])
try:
    zmq.proxy(a, b)
except (KeyboardInterrupt, zmq.ContextTerminated):
    pass
"""


def free_tcp() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class Relay:
    """client PUSH -> relay 1 -> ... -> relay hops-1 -> client PULL: `hops` one-way
    loopback hops through hops-1 processes, each running libzmq's proxy loop."""

    def __init__(self, hops: int):
        import zmq
        self.ctx = zmq.Context(1)
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        sink = free_tcp()
        self.pull.bind(sink)
        addrs = [free_tcp() for _ in range(hops - 1)] + [sink]
        self.procs = [subprocess.Popen([sys.executable, "-c", RELAY, addrs[k], addrs[k + 1]],
                                       stdin=subprocess.DEVNULL)
                      for k in range(hops - 1)]
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(addrs[0])
        for _ in range(200):  # until the whole chain forwards
            self.push.send(b"ping")
            if self.pull.poll(100):
                self.pull.recv()
                break
        else:
            raise RuntimeError("ZeroMQ relay chain did not come up")
        while self.pull.poll(200):
            self.pull.recv()

    def call(self, i: int) -> int:
        self.push.send(i.to_bytes(8, "little"))
        if not self.pull.poll(10000):
            raise RuntimeError("relay lost a message")
        return int.from_bytes(self.pull.recv(), "little")

    def pipelined(self, seconds: float, inflight: int) -> dict:
        sent: dict[int, int] = {}
        lat: list[float] = []
        nxt = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            while time.perf_counter() < end and len(sent) < inflight:
                sent[nxt] = time.perf_counter_ns()
                self.push.send(nxt.to_bytes(8, "little"))
                nxt += 1
            if not sent:
                break
            if not self.pull.poll(10000):
                raise RuntimeError("relay lost a message")
            t = sent.pop(int.from_bytes(self.pull.recv(), "little"))
            lat.append((time.perf_counter_ns() - t) / 1000)
        return pipelined_figures(len(lat), time.perf_counter() - t0, lat, inflight)

    def close(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.push.close(0)
        self.pull.close(0)
        self.ctx.term()


def run_floor(args) -> dict:
    out = {"hops": dict(HOPS)}
    for w, hops in (("a", HOPS["a"]), ("b", HOPS["b"]), ("c", 2 + args.chain)):
        r = Relay(hops)
        try:
            out[w] = dict(measure_latency(r.call, args, lambda i, v: v == i), hops=hops)
            if w == "a":
                sq = lambda i: r.call(i) ** 2  # same check as the others: i -> i*i
                out["d"] = dict(measure_sequential(sq, args), hops=hops)
                out["e"] = dict(r.pipelined(args.throughput_seconds, args.inflight),
                                hops=hops)
        finally:
            r.close()
    out["hops"]["c"] = 2 + args.chain
    return out


RUNNERS = {"squall": run_squall, "ray": run_ray, "dask": run_dask, "floor": run_floor}


# ---- the parent: one child per system, the table and the JSON ------------------------

def run_child(system: str, args, share: float = 1.0) -> dict:
    """Runs one system in a child process (own session, killed as a group on timeout or
    interrupt) with `share` of the samples and measured seconds; returns its figures or
    {"unavailable": reason}."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", system,
            *child_flags(args, share)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=args.system_timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        return {"unavailable": f"did not finish within {args.system_timeout:.0f} s"}
    except BaseException:
        kill_group(p)
        raise
    lines = out.strip().splitlines()
    try:
        res = json.loads(lines[-1]) if lines else None
    except ValueError:
        res = None
    if not isinstance(res, dict):
        return {"unavailable": f"exited with status {p.returncode} without figures"}
    return res


def kill_group(p: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue


def child_flags(args, share: float = 1.0) -> list[str]:
    return ["--executors", str(args.executors),
            "--samples", str(max(1, round(args.samples * share))),
            "--latency-seconds", str(args.latency_seconds * share), "--warmup-calls",
            str(args.warmup_calls),
            "--throughput-seconds", str(args.throughput_seconds * share),
            "--inflight", str(args.inflight), "--chain", str(args.chain)]


def child_main(system: str, args) -> int:
    """Measures one system; its last stdout line is its JSON (or an unavailable note)."""
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        res = RUNNERS[system](args)
    except ImportError as e:
        res = {"unavailable": f"not installed: {e} (scripts/bootstrap test,bench)"}
    except Exception as e:  # a peer that cannot start is reported, not fatal
        res = {"unavailable": f"{type(e).__name__}: {e}"}
    print(json.dumps(res), flush=True)
    return 0


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def ratios(results: dict) -> dict:
    """squall / peer for every workload: latency ratios (p50, p99; below 1 is better for
    squall) for a-c, throughput ratios (above 1 is better for squall) for d-e."""
    sq = results.get("squall", {})
    out = {}
    for peer in ("ray", "dask", "floor"):
        pr = results.get(peer, {})
        if "unavailable" in sq or "unavailable" in pr:
            continue
        r = {}
        for w, pw in (("a", "a"), ("b", "b"), ("c", "c"), ("a_api", "a"), ("b_api", "b")):
            if w in sq and pw in pr:
                r[w] = {"p50": ratio(sq[w]["p50_us"], pr[pw]["p50_us"]),
                        "p99": ratio(sq[w]["p99_us"], pr[pw]["p99_us"])}
        for w, pw in (("d", "d"), ("e", "e"), ("e_api", "e")):
            if w in sq and pw in pr:
                r[w] = {"throughput": ratio(sq[w]["calls_per_s"], pr[pw]["calls_per_s"])}
        out[peer] = r
    return out


def verdict(rat: dict) -> dict:
    def get(peer, w, k):
        return rat.get(peer, {}).get(w, {}).get(k)
    checks = {
        "b_p50_vs_ray": (get("ray", "b", "p50"), "<=", TARGETS["b_p50_vs_ray_max"]),
        "b_p50_vs_dask": (get("dask", "b", "p50"), "<=", TARGETS["b_p50_vs_dask_max"]),
        "b_p50_vs_floor": (get("floor", "b", "p50"), "<=", TARGETS["b_p50_vs_floor_max"]),
        "e_throughput_vs_ray": (get("ray", "e", "throughput"), ">=",
                                TARGETS["e_throughput_vs_ray_min"]),
    }
    out = {}
    for name, (v, op, lim) in checks.items():
        met = None if v is None else (v <= lim if op == "<=" else v >= lim)
        out[name] = {"ratio": v, "target": f"{op} {lim}", "met": met}
    return out


def cell(res: dict, w: str) -> str:
    if "unavailable" in res:
        return "n/a"
    f = res.get(w)
    if not f:
        return "-"
    if w in ("d", "e", "e_api"):
        return f"{f['calls_per_s']:.0f}/s"
    return f"{f['p50_us']:.0f} / {f['p99_us']:.0f}"


def print_table(results: dict, rat: dict, ver: dict, args) -> None:
    names = {"a": "a  one call (p50/p99 us)", "a_kvs": "a' one call, result via KVS",
             "b": "b  square->increment DAG", "c": f"c  {args.chain}-function chain",
             "d": "d  sequential calls/s", "e": f"e  pipelined calls/s ({args.inflight})",
             "a_api": "a  via squall's API", "b_api": "b  via squall's API",
             "e_api": "e  via squall's API"}
    systems = [s for s in SYSTEMS if s in results]
    head = ["workload"] + systems + [f"sq/{p}" for p in ("ray", "dask", "floor")]
    rows = []
    for w, label in names.items():
        row = [label] + [cell(results[s], w) for s in systems]
        for peer in ("ray", "dask", "floor"):
            r = rat.get(peer, {}).get(w, {})
            v = r.get("p50", r.get("throughput"))
            row.append("-" if v is None else f"{v:.2f}x")
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda cols: "  ".join(str(c).ljust(wd) if i == 0 else str(c).rjust(wd)
                                 for i, (c, wd) in enumerate(zip(cols, widths)))
    print(fmt(head))
    print(fmt(["-" * wd for wd in widths]))
    for row in rows:
        print(fmt(row))
    for s in systems:
        if "unavailable" in results[s]:
            print(f"{s}: unavailable: {results[s]['unavailable']}")
    print(f"executors: {args.executors} per system; latencies p50 / p99 in microseconds; "
          "ratios squall/peer (p50 for a-c: below 1 is better; calls/s for d-e: above 1 "
          "is better); floor: ZeroMQ PUSH/PULL relay over squall's hop count "
          f"(a,d,e {HOPS['a']}, b {HOPS['b']}, c {2 + args.chain})")
    for name, v in ver.items():
        met = {True: "met", False: "MISSED", None: "n/a"}[v["met"]]
        print(f"target {name}: {v['ratio']} (target {v['target']}) {met}")
    sys.stdout.flush()


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="composition_bench.py",
                                 description="Composition latency/throughput: squall vs "
                                 "Ray, Dask and a ZeroMQ floor.")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help=f"comma list of {', '.join(SYSTEMS)}")
    ap.add_argument("--executors", type=int, default=2, help="executors/workers per system")
    ap.add_argument("--samples", type=int, default=2000, help="latency samples per workload")
    ap.add_argument("--latency-seconds", type=float, default=4.0,
                    help="at most this long per latency workload")
    ap.add_argument("--warmup-calls", type=int, default=20, help="unmeasured calls first")
    ap.add_argument("--throughput-seconds", type=float, default=4.0,
                    help="measured seconds of d and e")
    ap.add_argument("--inflight", type=int, default=100, help="outstanding calls in e")
    ap.add_argument("--chain", type=int, default=10, help="functions in c's chain")
    ap.add_argument("--system-timeout", type=float, default=120.0,
                    help="a system that takes longer is killed and reported unavailable")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds of squall and of the floor, alternating around the other "
                    "systems (squall, floor, ray, dask, floor, squall), each with its share "
                    "of the samples and seconds; 1 runs each system once")
    ap.add_argument("--quick", action="store_true", help="1 s per workload")
    ap.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.latency_seconds = args.throughput_seconds = 1.0
    bad = [s for s in args.systems.split(",") if s not in SYSTEMS]
    if (bad or args.executors < 1 or args.inflight < 1 or args.chain < 2 or args.samples < 1
            or args.rounds < 1):
        ap.error(f"bad --systems {bad} or non-positive counts (--chain >= 2, --rounds >= 1)")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, args)
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt()))
    runs: dict[str, list[dict]] = {}
    t0 = time.monotonic()
    for system in run_order(args.systems.split(","), args.rounds):
        paired = args.rounds > 1 and system in ("squall", "floor")
        log(f"{system}: measuring" + (f" (round {len(runs.get(system, [])) + 1} of "
                                      f"{args.rounds})" if paired else ""))
        res = run_child(system, args, share=1.0 / args.rounds if paired else 1.0)
        runs.setdefault(system, []).append(res)
        if "unavailable" in res:
            log(f"{system}: unavailable: {res['unavailable']}")
    results = strip_samples({s: merge_rounds(r) for s, r in runs.items()})
    rat = ratios(results)
    ver = verdict(rat)
    print_table(results, rat, ver, args)
    print(json.dumps({
        "benchmark": "composition",
        "config": {"executors": args.executors, "samples": args.samples,
                   "rounds": args.rounds,
                   "latency_seconds": args.latency_seconds,
                   "throughput_seconds": args.throughput_seconds,
                   "inflight": args.inflight, "chain": args.chain,
                   "warmup_calls": args.warmup_calls, "cpus": os.cpu_count(),
                   "hops": dict(HOPS, c=2 + args.chain),
                   "wall_seconds": round(time.monotonic() - t0, 1)},
        "systems": results, "ratios": rat, "targets": ver}), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
