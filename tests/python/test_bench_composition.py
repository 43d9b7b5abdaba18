"""bench/composition_bench.py: squall and the floor in alternating rounds, and the merging
of each system's rounds (the b / floor target compares the two)."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from kvs_harness import ROOT


def load_composition_bench():
    spec = importlib.util.spec_from_file_location(
        "composition_bench", ROOT / "bench" / "composition_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["composition_bench"] = module
    spec.loader.exec_module(module)
    return module


cb = load_composition_bench()
ALL = ["squall", "ray", "dask", "floor"]


def test_squall_and_the_floor_run_in_rounds_around_the_other_systems():
    assert cb.run_order(ALL, 2) == ["squall", "floor", "ray", "dask", "floor", "squall"]
    assert cb.run_order(ALL, 1) == ALL
    assert cb.run_order(["squall", "ray"], 2) == ["squall", "ray"]  # nothing to pair
    four = cb.run_order(ALL, 4)
    assert four.count("squall") == four.count("floor") == 4
    assert four.index("ray") == 4 and four.index("dask") == 5


def test_latency_rounds_pool_their_samples():
    fast = cb.latency_figures([100.0] * 90)
    slow = cb.latency_figures([900.0] * 10)
    m = cb.merge_workload([fast, slow])
    assert m["n"] == 100 and m["p50_us"] == 100.0 and m["p99_us"] == 900.0
    assert m["mean_us"] == 180.0 and "samples_us" not in m


def test_throughput_rounds_add_calls_and_seconds():
    a = dict(cb.latency_figures([50.0] * 10), calls=1000, seconds=1.0, calls_per_s=1000.0)
    b = dict(cb.latency_figures([50.0] * 10), calls=3000, seconds=1.0, calls_per_s=3000.0)
    m = cb.merge_workload([a, b])
    assert m["calls"] == 4000 and m["seconds"] == 2.0 and m["calls_per_s"] == 2000.0


def test_rounds_without_samples_average_their_quantiles_by_count():
    big = [float(i) for i in range(cb.SAMPLES_KEPT_MAX + 1)]
    a = cb.latency_figures(big)
    assert "samples_us" not in a
    b = cb.latency_figures(big)
    m = cb.merge_workload([a, b])
    assert m["p50_us"] == a["p50_us"] and m["n"] == 2 * len(big)
    assert "count-weighted" in m["quantiles"]


def test_an_unavailable_round_makes_the_system_unavailable_and_samples_are_dropped():
    ok = {"a": cb.latency_figures([1.0, 2.0]), "hops": {"a": 3}}
    assert cb.merge_rounds([ok, {"unavailable": "boom"}]) == {"unavailable": "boom"}
    merged = cb.strip_samples({"floor": cb.merge_rounds([ok, ok])})
    assert merged["floor"]["rounds"] == 2 and merged["floor"]["a"]["n"] == 4
    assert "samples_us" not in merged["floor"]["a"]
    assert merged["floor"]["hops"] == {"a": 3}


def test_rounds_below_one_are_refused():
    with pytest.raises(SystemExit):
        cb.parse_args(["--rounds", "0"])
