"""The local cluster: start, find, check, stop squall's daemons on loopback.

One cluster lives in one directory (``--dir``, else ``$SQUALL_HOME``, else
``~/.squall/local``)::

    <dir>/cluster.json        state: pids, ports, binaries, port offset (JSON)
    <dir>/cluster.lock        flock held while a cluster is started or stopped
    <dir>/data/kvs/           squall-kvs logs and snapshots (survive ``down``)
    /dev/shm/squall-<uid>-<hash of dir>-<offset>/
                              squall-cache's LMDB files on tmpfs (else <dir>/data/cache),
                              removed by ``down``: the KVS holds the data
    <dir>/logs/<daemon>.log   each daemon's stdout and stderr

Daemons start in dependency order -- squall-kvs, squall-cache, squall-scheduler,
squall-worker -- each in its own session (a Ctrl-C in the shell that ran ``squall up``
does not reach them). A daemon whose binary is not there is skipped with a note, so
the cluster works with the KVS alone and picks the others up as they are built. Each
one must be healthy before the next starts:

    kvs        a GET through routing gets an answer (KEY_DNE counts)
    cache      its update port (7150+offset) accepts connections
    scheduler  REQ on 5000+offset answers (the routing address)
    worker     every executor listens (4020+offset+t) and logged "executor <id> ready"

Ports are Cloudburst's and Anna's plus the offset: routing 6450, storage threads
6200+t, scheduler 5000-5011, executors 4000-4050+t and 5500+t, cache 7150.

Invariants: the state file names every process this module started and is rewritten
(atomically) after each start, so ``down`` can stop a half-started cluster; a state
file whose processes are all gone (or were replaced by unrelated programs with the
same pids) is stale and removed. Binaries come from ``$SQUALL_BIN_DIR`` when it is set
(the tests point it at sanitizer builds), else from the installed package's ``bin``.

Threads: everything runs in the caller's thread; the flock serialises processes.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from . import _squall

STATE_FILE = "cluster.json"
_START_MARK = "--- squall up "
STATE_VERSION = 1
HOST = "127.0.0.1"
KVS_THREADS = 2
ORDER = ("kvs", "cache", "scheduler", "worker")
BINARIES = {"kvs": "squall-kvs", "cache": "squall-cache", "scheduler": "squall-scheduler",
            "worker": "squall-worker"}


class ClusterError(RuntimeError):
    """The local cluster could not be started, found or stopped; the message says why
    and what to do (and quotes the end of the failing daemon's log)."""


# ---- ports and places ----------------------------------------------------------------

def routing_endpoint(host: str, offset: int) -> str:
    """The KVS routing endpoint of a cluster at ``host`` with port offset ``offset``."""
    return f"tcp://{host}:{6450 + offset}"


def scheduler_endpoint(host: str, offset: int, port: int = 5000) -> str:
    """A scheduler REP endpoint (5000 connect, 5001 create, 5003 list, ...)."""
    return f"tcp://{host}:{port + offset}"


def parse_address(address: str) -> tuple[str, int]:
    """``"host[:offset]"`` -> ``(host, offset)``; ValueError if malformed.

    >>> parse_address("10.0.0.5:100")
    ('10.0.0.5', 100)
    """
    host, _, off = address.strip().rpartition(":") if ":" in address else (address, "", "0")
    host = host.strip()
    if not host or not off.strip().lstrip("-").isdigit():
        raise ValueError(f"address must be 'host' or 'host:port_offset', not {address!r}")
    offset = int(off)
    if not -4000 <= offset <= 59000:
        raise ValueError(f"port offset {offset} puts squall's ports outside 1..65535")
    return host, offset


def default_home() -> Path:
    """The cluster directory: ``$SQUALL_HOME``, else ``~/.squall/local``."""
    env = os.environ.get("SQUALL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".squall" / "local"


def bin_dir() -> Path:
    """Where the daemons are: ``$SQUALL_BIN_DIR`` if set, else the package's ``bin``.

    Raises ClusterError when squall-kvs is in neither.
    """
    env = os.environ.get("SQUALL_BIN_DIR")
    pkg = Path(__file__).resolve().parent / "bin"
    for cand in ([Path(env).expanduser()] if env else []) + [pkg]:
        if (cand / BINARIES["kvs"]).is_file():
            return cand
    where = f"$SQUALL_BIN_DIR ({env}) and {pkg}" if env else str(pkg)
    raise ClusterError(f"squall-kvs was not found in {where}: reinstall the package "
                       "(pip install .) or point SQUALL_BIN_DIR at a build's bin directory")


# ---- processes ---------------------------------------------------------------------

def pid_alive(pid: int, binary: str | None = None) -> bool:
    """True if ``pid`` runs and is not a zombie; with ``binary``, only if that process's
    command line starts with a program of that name (a reused pid is not ours)."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2] in "ZX":
            return False
        if binary:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
            return os.path.basename(argv0.decode(errors="replace")) == os.path.basename(binary)
        return True
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return False
    except PermissionError:
        return True


def _port_open(port: int, host: str = HOST, timeout: float = 0.2) -> bool:
    with socket.socket() as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def _port_free(port: int) -> bool:
    """True if nothing listens on ``port`` (SO_REUSEADDR as ZeroMQ binds: a connection
    of a stopped daemon lingering in TIME_WAIT does not make the port busy)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


def _help_flags(binary: Path) -> set[str]:
    """The ``--flags`` a daemon's --help lists (so options it lacks are not passed)."""
    try:
        out = subprocess.run([str(binary), "--help"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    flags = set()
    for word in out.replace("=", " ").replace("[", " ").split():
        if word.startswith("--") and len(word) > 2:
            flags.add(word.rstrip(",."))
    return flags


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# ---- state -------------------------------------------------------------------------

def state_path(home: Path) -> Path:
    return Path(home) / STATE_FILE


def read_state(home: Path) -> dict[str, Any] | None:
    """The state file's contents, or None when there is none (or it is unreadable)."""
    try:
        st = json.loads(state_path(home).read_text())
        return st if isinstance(st, dict) and isinstance(st.get("daemons"), dict) else None
    except (FileNotFoundError, ValueError):
        return None


def _write_state(home: Path, st: dict[str, Any]) -> None:
    tmp = state_path(home).with_suffix(".tmp")
    tmp.write_text(json.dumps(st, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, state_path(home))


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "cluster.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def alive_daemons(st: dict[str, Any]) -> dict[str, bool]:
    """Daemon name -> whether its recorded pid still runs its binary."""
    return {name: pid_alive(int(d.get("pid", 0)), d.get("binary"))
            for name, d in st.get("daemons", {}).items()}


# ---- health ------------------------------------------------------------------------

def kvs_healthy(routing: str, timeout: float = 0.3) -> bool:
    """True if a GET through ``routing`` gets an answer (a missing key counts)."""
    try:
        with _squall.KvsClient(routing, timeout=timeout, retries=0) as c:
            c.get("squall/health")
        return True
    except _squall.KeyNotFoundError:
        return True
    except _squall.SquallError:
        return False


def scheduler_healthy(host: str, offset: int, timeout: float = 0.3) -> bool:
    """True if the scheduler's connect port (5000+offset) answers."""
    try:
        _squall.request(scheduler_endpoint(host, offset), b"", timeout=timeout)
        return True
    except _squall.SquallError:
        return False


def scheduler_functions(host: str, offset: int, prefix: str = "",
                        timeout: float = 1.0) -> list[str]:
    """The registered function names (the scheduler's list port, 5003+offset)."""
    reply = _squall.request(scheduler_endpoint(host, offset, 5003), prefix.encode(),
                            timeout=timeout)
    return sorted(_squall.decode_string_set(reply))  # protobuf-c, via sq_proto_unpack


def _executors_ready(log: Path, count: int) -> bool:
    """True once squall-worker's log, since the last start marker of ``squall up``, says
    ``executor <id> ready`` for ``count`` executors (an executor binds its ports before
    its embedded Python is up, and announces itself to the scheduler only then)."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return False
    text = text[max(text.rfind(_START_MARK), 0):]
    ready = {line.split(" executor ", 1)[1].split(" ", 1)[0]
             for line in text.splitlines() if " executor " in line and " ready (" in line}
    return len(ready) >= count


def executors_listening(offset: int, count: int) -> int:
    """How many of executors 0..count-1 accept connections on 4020+offset+t."""
    return sum(_port_open(4020 + offset + t) for t in range(count))


# ---- daemons -----------------------------------------------------------------------

@dataclass
class _Plan:
    """How to start and check one daemon."""
    name: str
    args: dict[str, str]
    ports: dict[str, int]
    ready: Callable[[], bool]
    extra_notes: list[str] = field(default_factory=list)


def cache_dir(home: Path, offset: int) -> Path:
    """squall-cache's directory: on tmpfs (/dev/shm) when there is one, named after the
    cluster directory and offset so that clusters never share it; else data/cache."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        tag = hashlib.sha1(str(Path(home).resolve()).encode()).hexdigest()[:10]
        return shm / f"squall-{os.getuid()}-{tag}-{offset}"
    return Path(home) / "data" / "cache"


def _plans(home: Path, offset: int, executors: int) -> list[_Plan]:
    routing = routing_endpoint(HOST, offset)
    return [
        _Plan("kvs", {"--data-dir": str(home / "data" / "kvs"), "--threads": str(KVS_THREADS),
                      "--port-offset": str(offset), "--durability": "fsync"},
              {"routing": 6450 + offset, "storage": 6200 + offset},
              lambda: kvs_healthy(routing)),
        _Plan("cache", {"--dir": str(cache_dir(home, offset)), "--kvs": routing,
                        "--port-offset": str(offset)},
              {"updates": 7150 + offset}, lambda: _port_open(7150 + offset)),
        _Plan("scheduler", {"--port-offset": str(offset), "--kvs": routing},
              {"connect": 5000 + offset, "list": 5003 + offset},
              lambda: scheduler_healthy(HOST, offset)),
        _Plan("worker", {"--executors": str(executors), "--port-offset": str(offset),
                         "--scheduler": HOST, "--kvs": routing, "--python": sys.executable,
                         "--cache-dir": str(cache_dir(home, offset))},
              {"exec": 4020 + offset},
              lambda: executors_listening(offset, executors) == executors
              and _executors_ready(home / "logs" / "worker.log", executors)),
    ]


def _spawn(home: Path, binary: Path, plan: _Plan) -> tuple[subprocess.Popen, dict[str, Any]]:
    """Starts one daemon in its own session, output appended to its log; returns the
    process and its state entry."""
    flags = _help_flags(binary)
    argv = [str(binary)] + [f"{k}={v}" for k, v in plan.args.items() if not flags or k in flags]
    log = home / "logs" / f"{plan.name}.log"
    with open(log, "ab") as out:
        out.write(f"{_START_MARK}{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(home))
    return proc, {"pid": proc.pid, "binary": str(binary), "log": str(log),
                  "ports": plan.ports, "argv": argv}


def _await_ready(proc: subprocess.Popen, plan: _Plan, log: Path, timeout: float) -> None:
    """Waits until ``plan.ready()``; ClusterError (with the log's tail) if the daemon
    exits or is not healthy within ``timeout`` seconds."""
    name = os.path.basename(proc.args[0])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterError(f"{name} exited with status {proc.returncode} while "
                               f"starting; the end of {log}:\n{_tail(log)}")
        if plan.ready():
            proc.returncode = 0  # not waited for here: the daemon outlives this object
            return
        time.sleep(0.05)
    raise ClusterError(f"{name} did not become healthy within {timeout:.0f} s; "
                       f"the end of {log}:\n{_tail(log)}")


def _check_ports(offset: int, executors: int, names: list[str]) -> None:
    ports = {"kvs": [6450 + offset] + [6200 + offset + t for t in range(KVS_THREADS)],
             "cache": [7150 + offset],
             "scheduler": [5000 + offset + p for p in range(12)],
             "worker": [4020 + offset + t for t in range(executors)]}
    busy = [p for n in names for p in ports[n] if not _port_free(p)]
    if busy:
        listening = [p for p in busy if _port_open(p)]
        why = ("another cluster or program listens there; stop it (squall down) or"
               if listening else "they were used moments ago (TCP TIME_WAIT, at most a "
               "minute); wait, or")
        raise ClusterError(f"ports {busy[:6]} are in use: {why} pick another port offset "
                           "(squall up --port-offset N, with N a multiple of 100)")


def up(home: Path | None = None, executors: int | None = None, port_offset: int = 0,
       timeout: float = 60.0, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Starts a local cluster in ``home`` (see the module docstring) unless a healthy one
    runs there already; returns its state (``"started": True`` if this call started it).

    Raises ClusterError when a daemon fails to start or to become healthy; the daemons
    this call had started are stopped again.
    """
    home = Path(home or default_home()).expanduser().resolve()
    note = log or (lambda s: None)
    with _locked(home):
        st = read_state(home)
        if st is not None:
            alive = alive_daemons(st)
            if alive and all(alive.values()):
                _wait_healthy(st, timeout)
                return dict(st, started=False)
            dead = [n for n, a in alive.items() if not a]
            note(f"squall: the cluster in {home} is not running ({', '.join(dead) or 'nothing'}"
                 " gone): stopping what is left and starting it afresh")
            _stop_all(home, st, grace=10.0)
        return _start_all(home, executors or os.cpu_count() or 1, port_offset, timeout, note)


def _wait_healthy(st: dict[str, Any], timeout: float) -> None:
    """Waits until a running cluster's KVS answers (it may still be recovering its log);
    ClusterError if it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not kvs_healthy(st["routing"], timeout=1.0):
        if time.monotonic() > deadline:
            log = st["daemons"].get("kvs", {}).get("log", "")
            raise ClusterError(f"the cluster in {st['dir']} runs but its KVS does not answer "
                               f"at {st['routing']}; see {log} (squall logs kvs), or stop it "
                               "with squall down")


def _start_all(home: Path, executors: int, offset: int, timeout: float,
               note: Callable[[str], None]) -> dict[str, Any]:
    bins = bin_dir()
    for d in ("logs", "data/kvs"):
        (home / d).mkdir(parents=True, exist_ok=True)
    plans = [p for p in _plans(home, offset, executors) if (bins / BINARIES[p.name]).is_file()]
    skipped = {n: f"{BINARIES[n]} not found in {bins}" for n in ORDER
               if n not in {p.name for p in plans}}
    _check_ports(offset, executors, [p.name for p in plans])
    st: dict[str, Any] = {"version": STATE_VERSION, "dir": str(home), "host": HOST,
                          "port_offset": offset, "executors": executors,
                          "routing": routing_endpoint(HOST, offset), "bin_dir": str(bins),
                          "cache_dir": str(cache_dir(home, offset)),
                          "created": time.time(), "daemons": {}, "skipped": skipped}
    try:
        for plan in plans:  # recorded before the wait: an interrupted start is stoppable
            proc, entry = _spawn(home, bins / BINARIES[plan.name], plan)
            st["daemons"][plan.name] = entry
            _write_state(home, st)
            _await_ready(proc, plan, Path(entry["log"]), timeout)
    except BaseException:
        _stop_all(home, st, grace=2.0)
        raise
    return dict(st, started=True)


def _stop_pid(pid: int, binary: str | None, grace: float) -> bool:
    """SIGTERM, then SIGKILL after ``grace`` seconds; True if it had to be killed."""
    if not pid_alive(pid, binary):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid, binary):
            return False
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        _reap(pid)
        if not pid_alive(pid, binary):
            break
        time.sleep(0.02)
    return True


def _reap(pid: int) -> None:
    """Collects ``pid`` if it is our child (it is when this process started it)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _stop_all(home: Path, st: dict[str, Any], grace: float) -> list[str]:
    """Stops the recorded daemons in reverse start order and removes the state file.
    Returns the names of the daemons that needed SIGKILL."""
    killed = []
    for name in reversed(ORDER):
        d = st.get("daemons", {}).get(name)
        if d and _stop_pid(int(d.get("pid", 0)), d.get("binary"), grace):
            killed.append(name)
    cdir = st.get("cache_dir")
    if cdir and "cache" in st.get("daemons", {}) and Path(cdir).name.startswith("squall-"):
        shutil.rmtree(cdir, ignore_errors=True)  # tmpfs is RAM; the KVS has the data
    with contextlib.suppress(FileNotFoundError):
        state_path(home).unlink()
    return killed


def down(home: Path | None = None, grace: float = 10.0) -> dict[str, Any] | None:
    """Stops the cluster in ``home`` (SIGTERM, SIGKILL after ``grace`` s) and removes its
    state file. Returns the state it stopped (with ``"killed"``: daemons that needed
    SIGKILL), or None when no cluster was recorded there."""
    home = Path(home or default_home()).expanduser().resolve()
    with _locked(home):
        st = read_state(home)
        if st is None:
            return None
        return dict(st, killed=_stop_all(home, st, grace))


def _du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total


def status(home: Path | None = None) -> dict[str, Any] | None:
    """What runs in ``home``: per daemon pid, alive, healthy; the functions the scheduler
    knows; executors listening; disk used by the KVS and cache. None if no state file;
    a stale state file (no recorded process alive) is removed and reported as
    ``{"stale": True, ...}``."""
    home = Path(home or default_home()).expanduser().resolve()
    st = read_state(home)
    if st is None:
        return None
    alive = alive_daemons(st)
    if not any(alive.values()):
        with _locked(home):
            if read_state(home) == st:
                state_path(home).unlink(missing_ok=True)
        return dict(st, stale=True)
    off, host = int(st["port_offset"]), st.get("host", HOST)
    rep: dict[str, Any] = dict(st, stale=False, alive=alive, healthy={}, functions=None)
    checks = {"kvs": lambda: kvs_healthy(st["routing"]),
              "cache": lambda: _port_open(7150 + off),
              "scheduler": lambda: scheduler_healthy(host, off),
              "worker": lambda: executors_listening(off, int(st["executors"])) > 0}
    for name in st["daemons"]:
        rep["healthy"][name] = bool(alive.get(name) and checks[name]())
    if rep["healthy"].get("scheduler"):
        with contextlib.suppress(_squall.SquallError, ValueError):
            rep["functions"] = scheduler_functions(host, off)
    if "worker" in st["daemons"]:
        rep["executors_listening"] = executors_listening(off, int(st["executors"]))
    rep["disk"] = {"kvs": _du(home / "data" / "kvs"),
                   "cache": _du(Path(st.get("cache_dir") or home / "data" / "cache"))}
    return rep


def format_status(rep: dict[str, Any]) -> str:
    """The report of ``squall status`` for a status() result."""
    off = rep["port_offset"]
    lines = [f"cluster {rep['dir']}  (host {rep.get('host', HOST)}, port offset {off})",
             f"  KVS routing {rep['routing']}"]
    for name in ORDER:
        d = rep["daemons"].get(name)
        if d is None:
            lines.append(f"  {name:<9} -     skipped: {rep.get('skipped', {}).get(name, '')}")
            continue
        state = ("healthy" if rep["healthy"].get(name) else "not answering") \
            if rep["alive"].get(name) else "DEAD"
        ports = ", ".join(f"{k} {v}" for k, v in d.get("ports", {}).items())
        lines.append(f"  {name:<9} pid {d['pid']:<7} {state:<13} ({ports})  log {d['log']}")
    if "executors_listening" in rep:
        lines.append(f"  executors {rep['executors_listening']}/{rep['executors']} listening")
    if rep.get("functions") is not None:
        fns = rep["functions"]
        lines.append(f"  functions {len(fns)}: {', '.join(fns) if fns else '(none registered)'}")
    mib = {k: v / (1 << 20) for k, v in rep.get("disk", {}).items()}
    lines.append(f"  disk      kvs {mib.get('kvs', 0):.1f} MiB, cache {mib.get('cache', 0):.1f} MiB")
    return "\n".join(lines)


def format_up(st: dict[str, Any]) -> str:
    """The report of ``squall up``: where everything is."""
    verb = "started" if st.get("started") else "already running"
    lines = [f"squall: local cluster {verb} in {st['dir']}",
             f"  KVS routing   {st['routing']}"]
    for name in ORDER:
        d = st["daemons"].get(name)
        if d:
            ports = ", ".join(f"{k} {v}" for k, v in d["ports"].items())
            lines.append(f"  {name:<13} pid {d['pid']} ({ports}), log {d['log']}")
        else:
            lines.append(f"  {name:<13} skipped: {st['skipped'].get(name)}")
    addr = st["host"] if not st["port_offset"] else f"{st['host']}:{st['port_offset']}"
    lines.append(f"  connect with  squall.init(address={addr!r}); stop with: squall down")
    return "\n".join(lines)


def log_files(home: Path | None = None) -> dict[str, Path]:
    """Daemon name -> its log file in ``home`` (the ones that exist)."""
    home = Path(home or default_home()).expanduser()
    return {n: home / "logs" / f"{n}.log" for n in ORDER
            if (home / "logs" / f"{n}.log").exists()}


def follow(paths: dict[str, Path], out=None, poll: float = 0.2,
           stop: Callable[[], bool] = lambda: False) -> None:
    """Prints new lines of ``paths`` as they are written (``tail -f``), each prefixed
    with its daemon's name when there are several, until ``stop()`` or Ctrl-C."""
    out = out or sys.stdout
    files = {n: open(p, "r", errors="replace") for n, p in paths.items()}
    try:
        for f in files.values():
            f.seek(0, os.SEEK_END)
        while not stop():
            quiet = True
            for name, f in files.items():
                for line in iter(f.readline, ""):
                    quiet = False
                    out.write(f"{name}: {line}" if len(files) > 1 else line)
            out.flush()
            if quiet:
                time.sleep(poll)
    except KeyboardInterrupt:
        pass
    finally:
        for f in files.values():
            f.close()


def copy_log(path: Path, out=None) -> None:
    """Writes the whole of one log to ``out`` (default stdout)."""
    out = out or sys.stdout
    with open(path, "r", errors="replace") as f:
        shutil.copyfileobj(f, out)


# ---- the session of this process: squall.init / shutdown / put / get ----------------

@dataclass
class Cluster:
    """A handle on the cluster this process uses (what ``squall.init`` returns).

    ``routing`` is the KVS routing endpoint, ``scheduler`` the scheduler's host (None
    when the cluster has none), ``port_offset`` the offset of every port, ``home`` the
    directory of a local cluster (None for a remote one), ``started_here`` whether this
    process started it (then it stops it at exit), ``kvs`` the process's KvsClient.
    """
    routing: str
    host: str
    port_offset: int
    scheduler: str | None
    home: Path | None
    started_here: bool
    kvs: Any = field(repr=False)
    state: dict[str, Any] = field(default_factory=dict, repr=False)


_session: dict[str, Any] = {"cluster": None, "atexit": None}


def _connect(host: str, offset: int, timeout: float) -> None:
    routing = routing_endpoint(host, offset)
    deadline = time.monotonic() + timeout
    while not kvs_healthy(routing, timeout=min(1.0, timeout)):
        if time.monotonic() > deadline:
            raise ClusterError(f"no squall cluster answers at {host} (KVS routing {routing}): "
                               "start one there (squall up) or check the address and "
                               "port offset")


def init(address: str | None = None, *, home: str | os.PathLike | None = None,
         executors: int | None = None, port_offset: int | None = None,
         timeout: float = 60.0) -> Cluster:
    """Connects this process to a squall cluster and returns its handle.

    With no ``address``: reuses the local cluster recorded in ``home`` (default
    ``$SQUALL_HOME`` or ``~/.squall/local``) if it is running and healthy, else starts
    one there exactly as ``squall up`` does and stops it when this process exits. With
    ``address="host[:port_offset]"``: connects to the cluster already running there.
    A second call in the same process returns the same handle and does nothing else.

    Raises ClusterError when no cluster can be found or started (the message says why).

    Example:

        >>> import squall
        >>> cluster = squall.init()          # starts ~/.squall/local, or reuses it
        >>> ref = squall.put({"a": 1})
        >>> squall.get(ref)
        {'a': 1}
        >>> squall.init() is cluster
        True
    """
    if _session["cluster"] is not None:
        return _session["cluster"]
    if address is not None:
        host, offset = parse_address(address)
        _connect(host, offset, timeout)
        st: dict[str, Any] = {}
        where, started = None, False
        sched_host = host if scheduler_healthy(host, offset, timeout=1.0) else None
    else:
        where = Path(home).expanduser() if home else default_home()
        if port_offset is None:
            port_offset = int(os.environ.get("SQUALL_PORT_OFFSET", "0"))
        st = up(where, executors=executors, port_offset=port_offset, timeout=timeout,
                log=lambda s: print(s, file=sys.stderr))
        if st["started"] and st["skipped"]:
            print(f"squall: started a local cluster in {st['dir']} without "
                  f"{', '.join(st['skipped'])} (not built)", file=sys.stderr)
        host, offset, started = st["host"], int(st["port_offset"]), bool(st["started"])
        sched_host = host if "scheduler" in st["daemons"] else None
    kvs = _squall.KvsClient(routing_endpoint(host, offset))
    cluster = Cluster(routing_endpoint(host, offset), host, offset, sched_host, where,
                      started, kvs, st)
    _session["cluster"] = cluster
    if started:
        import atexit
        _session["atexit"] = shutdown
        atexit.register(shutdown)
    return cluster


def shutdown() -> None:
    """Disconnects this process; stops the local cluster if (and only if) this process
    started it. Does nothing when not initialised. ``squall.init`` may be called again.

    Example:

        >>> squall.shutdown()
    """
    cluster: Cluster | None = _session["cluster"]
    if cluster is None:
        return
    _session["cluster"] = None
    if _session["atexit"] is not None:
        import atexit
        atexit.unregister(_session["atexit"])
        _session["atexit"] = None
    cluster.kvs.close()
    if cluster.started_here and cluster.home is not None:
        down(cluster.home)


def current() -> Cluster:
    """The handle of ``squall.init``; RuntimeError telling what to do when there is none."""
    cluster = _session["cluster"]
    if cluster is None:
        raise RuntimeError("squall is not initialised: call squall.init() first (it starts "
                           "or reuses a local cluster), or squall.init(address='host') to "
                           "connect to a running one")
    return cluster
