"""The local cluster and the KVS transport of the Python package, against real daemons:
`squall up/status/logs/down` as subprocesses, squall.init reuse / connect / atexit,
stale state files, put/get of Python values, and KvsClient's exceptions.

Every test uses its own $SQUALL_HOME under tmp_path and a free port offset, and stops
whatever it started (the `cluster_dir` fixture runs `down` at the end regardless).
"""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import squall
from squall import _cluster
from kvs_harness import bin_dir

pytestmark = pytest.mark.timeout(120)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def cluster_offset() -> int:
    """A port offset with every port of a one-executor cluster free, all of them below
    Linux's ephemeral range (32768..) so that client connections cannot take them."""
    for _ in range(200):
        off = random.randrange(1000, 25000, 10)
        ports = [6450 + off] + [6200 + off + t for t in range(_cluster.KVS_THREADS)]
        ports += [5000 + off + p for p in range(12)] + [4000 + off + p for p in range(0, 60, 10)]
        ports += [5500 + off, 7150 + off]
        if all(_free(p) for p in ports):
            return off
    raise RuntimeError("no free port offset for a cluster")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """$SQUALL_HOME and $SQUALL_BIN_DIR for this test, in-process and for children."""
    home = tmp_path / "home"
    monkeypatch.setenv("SQUALL_HOME", str(home))
    monkeypatch.setenv("SQUALL_BIN_DIR", str(bin_dir()))
    yield home
    squall.shutdown()
    _cluster.down(home, grace=5.0)


def cli(*args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "squall._cli", *args], capture_output=True,
                       text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"squall {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def pids(home: Path) -> dict[str, int]:
    st = json.loads((home / _cluster.STATE_FILE).read_text())
    return {n: d["pid"] for n, d in st["daemons"].items()}


def run_python(code: str, timeout: float = 90) -> str:
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stderr
    return p.stdout


# ---- the command line ---------------------------------------------------------------

def test_cli_up_status_logs_down_round_trip(env):
    off = cluster_offset()
    out = cli("up", "--executors", "1", "--port-offset", str(off)).stdout
    assert f"tcp://127.0.0.1:{6450 + off}" in out and "log" in out
    started = pids(env)
    assert "kvs" in started and all(_cluster.pid_alive(p) for p in started.values())
    assert _cluster.kvs_healthy(f"tcp://127.0.0.1:{6450 + off}")

    status = cli("status").stdout
    assert f"pid {started['kvs']}" in status and "healthy" in status
    assert "DEAD" not in status
    if "scheduler" in started:
        assert "functions 0" in status
    if "worker" in started:
        assert "executors 1/1 listening" in status

    assert "ready" in cli("logs", "kvs").stdout

    again = cli("up", "--executors", "1", "--port-offset", str(off)).stdout
    assert "already running" in again and pids(env) == started

    assert "stopped" in cli("down").stdout
    assert not (env / _cluster.STATE_FILE).exists()
    assert not any(_cluster.pid_alive(p) for p in started.values())
    assert cli("status", check=False).returncode == 1


def test_cli_up_refuses_busy_ports_with_a_clear_message(env):
    off = cluster_offset()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 6450 + off))
        s.listen()
        p = cli("up", "--port-offset", str(off), check=False)
    assert p.returncode == 1
    assert "in use" in p.stderr and "--port-offset" in p.stderr
    assert not (env / _cluster.STATE_FILE).exists()


def test_stale_state_file_is_detected_and_cleaned(env):
    env.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = {"version": 1, "dir": str(env), "host": "127.0.0.1", "port_offset": 0,
             "executors": 1, "routing": "tcp://127.0.0.1:6450", "skipped": {},
             "daemons": {"kvs": {"pid": dead.pid, "binary": str(bin_dir() / "squall-kvs"),
                                 "log": str(env / "logs" / "kvs.log"), "ports": {}}}}
    (env / _cluster.STATE_FILE).write_text(json.dumps(stale))
    p = cli("status", check=False)
    assert p.returncode == 1 and "no longer running" in p.stdout
    assert not (env / _cluster.STATE_FILE).exists()

    # `up` over a stale file starts a fresh cluster
    (env / _cluster.STATE_FILE).write_text(json.dumps(stale))
    off = cluster_offset()
    st = _cluster.up(env, executors=1, port_offset=off, timeout=60)
    assert st["started"] and st["daemons"]["kvs"]["pid"] != dead.pid
    assert _cluster.kvs_healthy(st["routing"])


def test_up_restarts_a_cluster_whose_kvs_died_and_keeps_its_data(env):
    off = cluster_offset()
    cli("up", "--executors", "1", "--port-offset", str(off))
    c = squall.init(address=f"127.0.0.1:{off}")
    ref = squall.put({"durable": True})
    squall.shutdown()
    before = pids(env)
    os.kill(before["kvs"], 9)
    while _cluster.pid_alive(before["kvs"], "squall-kvs"):
        time.sleep(0.02)
    p = cli("up", "--executors", "1", "--port-offset", str(off))
    assert "kvs gone" in p.stderr and "started" in p.stdout
    after = pids(env)
    assert after["kvs"] != before["kvs"]
    assert not any(_cluster.pid_alive(p) for p in before.values())
    squall.init(address=f"127.0.0.1:{off}")
    assert squall.get(ref) == {"durable": True}
    assert c.routing == f"tcp://127.0.0.1:{6450 + off}"


def fake_kvs(tmp_path: Path, body: str) -> Path:
    d = tmp_path / "fakebin"
    d.mkdir()
    exe = d / "squall-kvs"
    exe.write_text("#!/bin/bash\n[ \"$1\" = --help ] && exit 0\n" + body + "\n")
    exe.chmod(0o755)
    return d


def processes_started_from(directory: Path) -> list[int]:
    found = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv0 = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
        except OSError:
            continue
        if argv0.startswith(str(directory)) and _cluster.pid_alive(int(p)):
            found.append(int(p))
    return found


def test_up_reports_a_daemon_that_exits_with_its_log(env, tmp_path, monkeypatch):
    monkeypatch.setenv("SQUALL_BIN_DIR", str(fake_kvs(tmp_path, "echo 'boom: disk on fire' >&2; exit 3")))
    p = cli("up", "--port-offset", str(cluster_offset()), check=False)
    assert p.returncode == 1
    assert "exited with status 3" in p.stderr and "boom: disk on fire" in p.stderr
    assert not (env / _cluster.STATE_FILE).exists()


def test_up_stops_a_daemon_that_never_becomes_healthy(env, tmp_path, monkeypatch):
    monkeypatch.setenv("SQUALL_BIN_DIR", str(fake_kvs(tmp_path, 'exec -a "$0" sleep 60')))
    with pytest.raises(squall.ClusterError, match="did not become healthy"):
        _cluster.up(env, port_offset=cluster_offset(), timeout=1.0)
    assert not (env / _cluster.STATE_FILE).exists()
    assert processes_started_from(tmp_path / "fakebin") == []


def test_pid_of_another_program_is_not_taken_for_a_daemon():
    assert _cluster.pid_alive(os.getpid())
    assert not _cluster.pid_alive(os.getpid(), "squall-kvs")


# ---- squall.init --------------------------------------------------------------------

def test_init_twice_reuses_one_cluster_across_calls_and_processes(env):
    off = cluster_offset()
    c1 = squall.init(port_offset=off, executors=1)
    assert c1.started_here and c1.routing == f"tcp://127.0.0.1:{6450 + off}"
    first = pids(env)
    assert squall.init() is c1
    assert pids(env) == first
    # another process finds the same cluster, does not start or stop anything
    out = run_python("import json, squall\n"
                     "c = squall.init()\n"
                     "print(json.dumps([c.started_here, c.routing]))")
    assert json.loads(out.strip().splitlines()[-1]) == [False, c1.routing]
    assert pids(env) == first and all(_cluster.pid_alive(p) for p in first.values())
    squall.shutdown()
    assert not (env / _cluster.STATE_FILE).exists()
    assert not any(_cluster.pid_alive(p) for p in first.values())


def test_init_starts_a_cluster_that_process_exit_stops(env):
    off = cluster_offset()
    out = run_python("import json, squall\n"
                     f"c = squall.init(port_offset={off}, executors=1)\n"
                     "print(json.dumps({'started': c.started_here, 'routing': c.routing}))\n"
                     "print(squall.get(squall.put('x')))")
    lines = out.strip().splitlines()
    assert json.loads(lines[-2])["started"] is True and lines[-1] == "x"
    assert not (env / _cluster.STATE_FILE).exists()
    assert not _cluster.kvs_healthy(f"tcp://127.0.0.1:{6450 + off}", timeout=0.3)


def test_init_with_address_connects_to_a_cluster_another_process_started(env):
    off = cluster_offset()
    cli("up", "--executors", "1", "--port-offset", str(off))
    started = pids(env)
    c = squall.init(address=f"127.0.0.1:{off}")
    assert not c.started_here and c.port_offset == off
    ref = squall.put(b"shared")
    assert squall.get(ref) == b"shared"
    squall.shutdown()  # must not stop a cluster it did not start
    assert all(_cluster.pid_alive(p) for p in started.values())
    cli("down")


def test_init_with_address_of_no_cluster_fails_with_advice(env):
    off = cluster_offset()
    with pytest.raises(squall.ClusterError, match="squall up"):
        squall.init(address=f"127.0.0.1:{off}", timeout=0.5)


def test_put_without_init_says_to_call_init(env):
    squall.shutdown()
    with pytest.raises(RuntimeError, match=r"squall\.init\(\)"):
        squall.put(1)
    with pytest.raises(RuntimeError, match=r"squall\.init\(\)"):
        squall.get("some-key")


def test_init_returns_when_a_function_call_can_run(env):
    """Readiness is real: right after init, a registered function runs on an executor."""
    if not all((bin_dir() / b).is_file() for b in ("squall-scheduler", "squall-worker")):
        pytest.skip("squall-scheduler / squall-worker not built")
    from cb_harness import CloudburstClient
    c = squall.init(port_offset=cluster_offset(), executors=1)
    with CloudburstClient("127.0.0.1", c.port_offset) as cb:
        cb.register(lambda lib, x: x * 3, "triple")
        key = cb.call("triple", (14,)).response_id
        deadline = time.monotonic() + 30
        while True:
            try:
                assert squall.get(key) == 42
                break
            except KeyError:
                assert time.monotonic() < deadline, "no result within 30 s"
                time.sleep(0.05)


# ---- put / get ----------------------------------------------------------------------

@pytest.fixture
def session(env):
    cluster = squall.init(port_offset=cluster_offset(), executors=1)
    yield cluster
    squall.shutdown()


def test_put_get_round_trips_bytes_str_and_dict(session):
    for value in (b"\x00raw bytes\xff", "unicode ✓", {"a": [1, 2.5, None], "b": {"c": "d"}}):
        assert squall.get(squall.put(value)) == value


def test_put_stores_cloudburst_value_encoding(session):
    from squall import _serialize
    ref = squall.put("text")
    ltype, payload = session.kvs.get(ref.key)
    assert ltype == squall.LatticeType.LWW
    _, value = squall.decode_lww(payload)
    assert _serialize.decode_value(value) == (_serialize.STRING, b"text")
    raw = squall.put(b"bytes")
    _, value = squall.decode_lww(session.kvs.get(raw.key)[1])
    assert _serialize.decode_value(value) == (_serialize.DEFAULT, b"bytes")


def test_put_get_round_trips_a_100_mb_numpy_array(session):
    arr = np.random.default_rng(7).standard_normal(100 * (1 << 20) // 8)
    assert arr.nbytes == 100 << 20
    got = squall.get(squall.put(arr))
    assert isinstance(got, np.ndarray) and got.dtype == arr.dtype and got.shape == arr.shape
    assert np.array_equal(got, arr)


def test_get_of_a_missing_key_raises_key_not_found(session):
    with pytest.raises(KeyError):
        squall.get(squall.Ref("no-such-key"))


def test_get_of_a_priority_key_raises_type_error(session):
    session.kvs.put("a-prio", squall.LatticeType.PRIORITY, squall.encode_priority(1.0, b"x"))
    with pytest.raises(TypeError, match="PRIORITY"):
        squall.get("a-prio")


def test_get_of_a_set_key_returns_its_elements(session):
    from squall import _serialize
    members = [_serialize.encode_value(*_serialize.dump(v)) for v in (1, "two")]
    session.kvs.put("a-set", squall.LatticeType.SET, squall.encode_set(members))
    assert sorted(squall.get("a-set"), key=str) == [1, "two"]


# ---- KvsClient ----------------------------------------------------------------------

def test_kvs_client_missing_key_raises_key_not_found_error(session):
    with pytest.raises(squall.KeyNotFoundError) as e:
        session.kvs.get("missing")
    assert isinstance(e.value, KeyError) and isinstance(e.value, squall.SquallError)
    assert e.value.name == "SQ_EKEYDNE" and e.value.key == "missing"
    assert "key does not exist" in str(e.value)


def test_kvs_client_times_out_against_a_dead_port():
    off = cluster_offset()
    c = squall.KvsClient(f"tcp://127.0.0.1:{6450 + off}", timeout=0.2, retries=1)
    t0 = time.monotonic()
    with pytest.raises(squall.SquallTimeoutError) as e:
        c.get("k")
    assert 0.3 < time.monotonic() - t0 < 5
    assert isinstance(e.value, TimeoutError) and e.value.name == "SQ_ETIMEOUT"
    c.close()
    with pytest.raises(squall.SquallError, match="closed"):
        c.get("k")


def test_kvs_client_lattice_mismatch_raises_lattice_error_with_server_sentence(session):
    kvs = session.kvs
    kvs.put("typed", squall.LatticeType.LWW, squall.encode_lww(1, b"v"))
    with pytest.raises(squall.LatticeError) as e:
        kvs.put("typed", squall.LatticeType.SET, squall.encode_set([b"x"]))
    assert e.value.name == "SQ_ELATTICE"
    assert "LWW" in e.value.message and "SET" in e.value.message  # the server's sentence
    assert kvs.get("typed") == (squall.LatticeType.LWW, squall.encode_lww(1, b"v"))


def test_kvs_client_batches_merge_and_report_missing_keys(session):
    kvs = session.kvs
    lww = squall.LatticeType.LWW
    kvs.put_many([("b1", lww, squall.encode_lww(5, b"new")), ("b2", lww, squall.encode_lww(1, b"x"))])
    kvs.put("b1", lww, squall.encode_lww(3, b"old"))  # an older write loses the merge
    got = kvs.get_many(["b1", "b2", "b-missing"])
    assert got == [(lww, squall.encode_lww(5, b"new")), (lww, squall.encode_lww(1, b"x")), None]
    with pytest.raises(ValueError):
        kvs.get("bad\0key")


def test_kvs_client_releases_the_gil_while_waiting():
    import threading
    c = squall.KvsClient(f"tcp://127.0.0.1:{6450 + cluster_offset()}", timeout=0.5, retries=0)
    count, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.05)
        before = count[0]
        with pytest.raises(squall.SquallTimeoutError):
            c.get("k")
        progressed = count[0] - before
    finally:
        stop.set()
        t.join()
        c.close()
    assert progressed > 10000  # the other thread ran during the 0.5 s wait


def test_logs_follow_prints_only_new_lines_tagged_by_daemon(tmp_path):
    import io
    import threading
    a, b = tmp_path / "kvs.log", tmp_path / "scheduler.log"
    a.write_text("old line\n")
    b.write_text("")
    out, done = io.StringIO(), threading.Event()
    t = threading.Thread(target=_cluster.follow, args=({"kvs": a, "scheduler": b}, out),
                         kwargs={"poll": 0.01, "stop": done.is_set})
    t.start()
    time.sleep(0.1)
    with open(a, "a") as f:
        f.write("new kvs line\n")
    with open(b, "a") as f:
        f.write("new scheduler line\n")
    deadline = time.monotonic() + 5
    while "scheduler: new scheduler line" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    t.join()
    assert out.getvalue().splitlines() == ["kvs: new kvs line", "scheduler: new scheduler line"]
