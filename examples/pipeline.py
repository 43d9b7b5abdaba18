"""A small squall pipeline: a NumPy array in the KVS, a two-stage DAG over it.

    stage 1  normalize(a)  reads the array by reference on an executor (the executor
                           swaps the reference for the value), z-scores it and
                           summarises 8 chunks
    stage 2  aggregate(s)  combines the chunk summaries into the final statistics

The client puts the array once, registers the DAG once (on its first call) and calls
it several times; it prints the result, the time spent in each stage (measured on the
executors) and the end-to-end latency of a DAG call (scheduling, two executor hops,
the result through the KVS).

Run it with ``make demo`` (starts and stops a local cluster), or against a running
cluster: ``squall up`` then ``python examples/pipeline.py``.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

import squall

N = 4_000_000  # 32 MB of float64
CALLS = 10


@squall.function
def normalize(a):
    """z-scores the array and summarises it in 8 chunks (min, max, sum of squares, n)."""
    t0 = time.perf_counter()
    z = (a - a.mean()) / a.std()
    chunks = [(float(c.min()), float(c.max()), float(np.dot(c, c)), len(c))
              for c in np.array_split(z, 8)]
    return {"chunks": chunks, "ms": {"normalize": (time.perf_counter() - t0) * 1e3}}


@squall.function
def aggregate(part):
    """Combines the chunk summaries: count, min, max and variance of the z-scores."""
    t0 = time.perf_counter()
    chunks = part["chunks"]
    n = sum(c[3] for c in chunks)
    out = {"n": n, "min": min(c[0] for c in chunks), "max": max(c[1] for c in chunks),
           "variance": sum(c[2] for c in chunks) / n}
    out["ms"] = dict(part["ms"], aggregate=(time.perf_counter() - t0) * 1e3)
    return out


def start() -> squall.Cluster:
    """squall.init, trying port offsets until one is free (a demo must not fail on a
    busy port); SQUALL_PORT_OFFSET pins it."""
    if "SQUALL_PORT_OFFSET" in os.environ:
        return squall.init()
    last: Exception | None = None
    for offset in range(0, 3000, 100):
        try:
            return squall.init(port_offset=offset)
        except squall.ClusterError as e:
            if "in use" not in str(e):
                raise
            last = e
    raise SystemExit(f"no free port offset for the demo cluster: {last}")


def main() -> int:
    cluster = start()
    print(f"cluster: KVS {cluster.routing}, scheduler {cluster.scheduler}:"
          f"{5000 + cluster.port_offset}")
    rng = np.random.default_rng(7)
    a = rng.normal(10.0, 3.0, N)
    t0 = time.perf_counter()
    ref = squall.put(a)
    put_ms = (time.perf_counter() - t0) * 1e3
    print(f"put a {a.nbytes / 1e6:.0f} MB array as {ref.key} in {put_ms:.1f} ms")

    pipeline = squall.dag("demo-stats", [(normalize, aggregate)])
    t0 = time.perf_counter()
    result = pipeline.remote(ref).result(timeout=120)
    first_ms = (time.perf_counter() - t0) * 1e3
    e2e, stages = [], []
    for _ in range(CALLS):
        t0 = time.perf_counter()
        r = pipeline.remote(ref).result(timeout=120)
        e2e.append((time.perf_counter() - t0) * 1e3)
        stages.append(r["ms"])
    local = pipeline(a)
    assert abs(local["variance"] - result["variance"]) < 1e-9, (local, result)

    print(f"result: n={result['n']} min={result['min']:.3f} max={result['max']:.3f} "
          f"variance={result['variance']:.6f} (same as a local run)")
    print(f"first call (registers functions and DAG): {first_ms:.1f} ms")
    print(f"per stage over {CALLS} calls (median):")
    for name in ("normalize", "aggregate"):
        print(f"  {name:<10} {statistics.median(s[name] for s in stages):8.2f} ms  (on the executor)")
    compute = statistics.median(sum(s.values()) for s in stages)
    med = statistics.median(e2e)
    print(f"  end to end {med:8.2f} ms  (of which squall overhead {med - compute:.2f} ms:"
          " scheduling, reference read, 2 hops, result)")
    squall.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
