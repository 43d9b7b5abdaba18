"""bench/run kvs: alternating rounds and the merging of their figures.

The kvs benchmark splits each cell into rounds that alternate the two systems
(squall, redis, redis, squall, ...) and merges each system's rounds into one set of
figures. These tests pin the order, check the merged quantiles against kvs_load's own
(same buckets, same rule), and run a short real benchmark against both servers.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvs_harness import ROOT, bin_dir

RUN = ROOT / "bench" / "run"


def load_bench_run():
    loader = importlib.machinery.SourceFileLoader("bench_run", str(RUN))
    spec = importlib.util.spec_from_loader("bench_run", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look their module up by name
    loader.exec_module(module)
    return module


bench = load_bench_run()


def kvs_load_binary() -> Path:
    for d in (bin_dir().parent / "bench", ROOT / "build" / "release" / "bench",
              ROOT / "build" / "asan" / "bench"):
        if (d / "kvs_load").exists():
            return d / "kvs_load"
    pytest.skip("kvs_load is not built")


def fake_round(ops_per_s: float, seconds: float, buckets, mean_us: float = 1.0,
               errors: int = 0) -> dict:
    """A kvs_load JSON line with the fields merge_rounds reads."""
    return {"system": "squall", "op": "get", "seconds": seconds,
            "ops": round(ops_per_s * seconds), "ops_per_s": ops_per_s,
            "mean_us": mean_us, "errors": errors,
            "error_kinds": {"timeout": errors} if errors else {}, "preload_errors": 0,
            "client_cpu_us_per_op": 2.0,
            "min_ns": min((b[0] for b in buckets), default=0),
            "max_ns": max((b[1] - 1 for b in buckets), default=0), "histogram": buckets}


def test_rounds_alternate_so_each_system_runs_second_equally_often():
    assert bench.round_order(1) == ["squall", "redis"]
    order = bench.round_order(4)
    assert order == ["squall", "redis", "redis", "squall", "squall", "redis", "redis", "squall"]
    seconds = [order[i + 1] for i in range(0, len(order), 2)]
    assert seconds.count("squall") == seconds.count("redis") == 2


def test_merged_throughput_is_total_ops_over_total_time_and_keeps_each_round():
    a = fake_round(1000.0, 1.0, [[100, 101, 1000]])
    b = fake_round(3000.0, 1.0, [[200, 201, 3000]], errors=2)
    m = bench.merge_rounds([a, b])
    assert m["ops_per_s"] == 2000.0 and m["ops"] == 4000 and m["seconds"] == 2.0
    assert m["round_ops_per_s"] == [1000.0, 3000.0] and m["rounds"] == 2
    assert m["errors"] == 2 and m["error_kinds"] == {"timeout": 2}
    assert "histogram" not in m


def test_merged_quantiles_come_from_the_summed_histograms():
    # 90 fast values in one round, 10 slow ones in the other: p50 is fast, p99 slow,
    # which no average of the two rounds' own quantiles would give.
    fast = fake_round(90.0, 1.0, [[1000, 1008, 90]])
    slow = fake_round(10.0, 1.0, [[5000, 5040, 10]])
    m = bench.merge_rounds([fast, slow])
    assert m["p50_us"] == pytest.approx(1.003)
    assert m["p99_us"] == pytest.approx(5.019)
    assert m["max_us"] == pytest.approx(5.039)


def test_one_rounds_quantiles_match_kvs_loads_own(tmp_path):
    """The Python quantile over kvs_load's printed buckets equals kvs_load's own figure,
    on a real run against a real squall-kvs."""
    from kvs_harness import KvsNode
    node = KvsNode(tmp_path / "data", threads=1).start()
    try:
        out = subprocess.run(
            [str(kvs_load_binary()), "--system", "squall", "--port-offset",
             str(node.offset), "--op", "put", "--depth", "4", "--clients", "4",
             "--seconds", "0.3", "--warmup", "0.1", "--histogram"],
            capture_output=True, text=True, timeout=60, check=True)
    finally:
        node.stop()
    run = json.loads(out.stdout.strip().splitlines()[-1])
    assert run["errors"] == 0 and run["ops"] > 0
    assert sum(c for *_, c in run["histogram"]) >= run["ops"]
    m = bench.merge_rounds([run])
    for q in ("p50_us", "p99_us", "p999_us"):
        assert m[q] == pytest.approx(run[q], abs=0.051), q  # kvs_load prints 0.1 us


def test_kvs_load_drives_every_thread_of_a_node_over_its_own_zmtp(tmp_path):
    """kvs_load speaks ZMTP itself (bench/zmtp.h): two load threads against a node of
    three worker threads, PUTs with a preload then GETs of those values, no error."""
    from kvs_harness import KvsNode
    node = KvsNode(tmp_path / "data", threads=3).start()
    try:
        for op in ("put", "get"):
            out = subprocess.run(
                [str(kvs_load_binary()), "--system", "squall", "--port-offset",
                 str(node.offset), "--op", op, "--value-size", "300", "--depth", "8",
                 "--clients", "6", "--threads", "2", "--keys", "2000", "--seconds", "0.3",
                 "--warmup", "0.1", *(["--preload"] if op == "put" else [])],
                capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            run = json.loads(out.stdout.strip().splitlines()[-1])
            assert run["errors"] == 0 and run["preload_errors"] == 0, run
            assert run["ops"] > 100
    finally:
        node.stop()


def test_kvs_load_reports_a_node_killed_mid_run_instead_of_dying(tmp_path):
    """A node SIGKILLed under load: kvs_load drops the dead connection (writes to it
    fail with EPIPE, never SIGPIPE), retries the connect without flooding its stderr,
    and still ends the run and prints its figures, the lost requests counted as
    errors."""
    import time
    from kvs_harness import KvsNode
    node = KvsNode(tmp_path / "data", threads=1).start()
    load = subprocess.Popen(
        [str(kvs_load_binary()), "--system", "squall", "--port-offset", str(node.offset),
         "--op", "put", "--depth", "4", "--clients", "4", "--seconds", "3",
         "--warmup", "0", "--timeout", "0.3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.8)
        node.proc.kill()
        out, err = load.communicate(timeout=60)
    finally:
        if load.poll() is None:
            load.kill()
        node.stop()
    assert load.returncode == 0, err
    run = json.loads(out.strip().splitlines()[-1])
    assert run["ops"] > 0
    assert run["errors"] > 0, run  # the requests the dead node never answered
    assert err.count("retrying") <= 1, err  # one line per endpoint, not one per retry


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")
def test_short_kvs_benchmark_runs_rounds_against_both_servers():
    squall_kvs = bin_dir() / "squall-kvs"
    out = subprocess.run(
        [sys.executable, str(RUN), "kvs", "--cells", "PUT 8B d16 mem", "--seconds", "0.4",
         "--warmup", "0.1", "--rounds", "2", "--no-pin", "--squall-kvs", str(squall_kvs),
         "--kvs-load", str(kvs_load_binary())],
        capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["config"]["rounds"] == 2
    (cell,) = result["cells"]
    assert cell["cell"] == "PUT 8B d16 mem"
    for system in ("squall", "redis"):
        figures = cell[system]
        assert figures["rounds"] == 2 and len(figures["round_ops_per_s"]) == 2
        assert figures["errors"] == 0 and figures["ops"] > 0
        assert 0 < figures["p50_us"] <= figures["p99_us"]
    assert len(cell["round_throughput_ratios"]) == 2
    assert "rounds" in out.stdout.splitlines()[0]  # the table's header


def test_rounds_below_one_are_refused():
    out = subprocess.run([sys.executable, str(RUN), "kvs", "--rounds", "0"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--rounds must be at least 1" in out.stderr
