"""Start-up of every daemon binary (common/sq_daemon): --help, bad options, bad checks
and an unusable log file give the same messages and each daemon's documented exit code,
before any port is bound."""
from __future__ import annotations

import subprocess

import pytest

from kvs_harness import bin_dir

DAEMONS = ["squall-kvs", "squall-cache", "squall-scheduler", "squall-worker"]


def run(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir() / name), *args], capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("name", DAEMONS)
def test_help_lists_the_log_level_and_exits_zero(name):
    p = run(name, "--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"Usage: {name} ")
    assert "--log-level=error|warn|info|debug" in p.stdout


@pytest.mark.parametrize("name", DAEMONS)
def test_unknown_option_exits_two_and_points_to_help(name):
    p = run(name, "--no-such-option=1")
    assert p.returncode == 2
    assert f"{name}: command line: unknown option '--no-such-option'" in p.stderr
    assert f"(run {name} --help for the options)" in p.stderr


@pytest.mark.parametrize("name,args", [
    ("squall-kvs", ["--threads=5000"]),
    ("squall-cache", ["--kvs="]),
    ("squall-scheduler", ["--pin-tries=13"]),
])
def test_failed_check_exits_two(name, args):
    p = run(name, *args)
    assert p.returncode == 2
    assert p.stderr.startswith(f"{name}: --")


@pytest.mark.parametrize("name,code", [
    ("squall-kvs", 2), ("squall-cache", 2), ("squall-scheduler", 1),
])
def test_unusable_log_file_exits_with_the_daemons_code(name, code, tmp_path):
    p = run(name, f"--log-file={tmp_path}/missing-dir/x.log")
    assert p.returncode == code
    assert f"{name}: cannot open log file {tmp_path}/missing-dir/x.log" in p.stderr


def test_worker_has_no_log_file_option():
    p = run("squall-worker", "--log-file=x.log")
    assert p.returncode == 2 and "unknown option '--log-file'" in p.stderr
