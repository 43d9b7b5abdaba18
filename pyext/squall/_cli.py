"""The ``squall`` console command.

One argparse parser with a subcommand per action, so that later commands (``up``,
``down``, ``status``, ``logs``) are one ``add_parser`` call each. ``main`` returns the
exit status instead of calling ``sys.exit`` so tests can call it directly.

    squall --version        print the version and exit
    squall version          the same, as a subcommand
    squall up [--dir D] [--executors N] [--port-offset N]
                            start a local cluster in the background (or report the
                            running one) and print where everything is
    squall down [--dir D]   stop it (SIGTERM, SIGKILL after --grace seconds)
    squall status [--dir D] daemons, health, executors, functions, disk use
    squall logs [DAEMON] [-f] [--dir D]
                            print (or follow) the daemons' logs

Exit status: 0 on success, 1 when the cluster could not be started / is not running,
2 for a usage error.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

import squall
from squall import _cluster


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"squall {squall.__version__}")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    try:
        st = _cluster.up(args.dir, executors=args.executors, port_offset=args.port_offset,
                         timeout=args.timeout, log=lambda s: print(s, file=sys.stderr))
    except _cluster.ClusterError as e:
        print(f"squall up: {e}", file=sys.stderr)
        return 1
    print(_cluster.format_up(st))
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    st = _cluster.down(args.dir, grace=args.grace)
    if st is None:
        print(f"squall down: no cluster is recorded in {args.dir or _cluster.default_home()}")
        return 0
    killed = f" (killed after {args.grace:g} s: {', '.join(st['killed'])})" if st["killed"] else ""
    print(f"squall: stopped {', '.join(st['daemons']) or 'nothing'} in {st['dir']}{killed}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    rep = _cluster.status(args.dir)
    where = args.dir or _cluster.default_home()
    if rep is None:
        print(f"squall: no cluster in {where} (start one with: squall up)")
        return 1
    if rep["stale"]:
        print(f"squall: the cluster recorded in {where} is no longer running; removed its "
              "stale state file (start one with: squall up)")
        return 1
    print(_cluster.format_status(rep))
    return 0 if all(rep["alive"].values()) else 1


def _cmd_logs(args: argparse.Namespace) -> int:
    logs = _cluster.log_files(args.dir)
    if args.daemon:
        if args.daemon not in logs:
            print(f"squall logs: no log of {args.daemon} in {args.dir or _cluster.default_home()}"
                  f" (have: {', '.join(logs) or 'none'})", file=sys.stderr)
            return 1
        logs = {args.daemon: logs[args.daemon]}
    if not logs:
        print(f"squall logs: no logs in {args.dir or _cluster.default_home()}", file=sys.stderr)
        return 1
    if args.follow:
        _cluster.follow(logs)
        return 0
    for name, path in logs.items():
        if len(logs) > 1:
            print(f"==> {name}: {path} <==", flush=True)
        _cluster.copy_log(path)
    return 0


def _add_cluster_parsers(sub) -> None:
    dir_help = "cluster directory (default: $SQUALL_HOME or ~/.squall/local)"
    up = sub.add_parser("up", help="start a local cluster in the background")
    up.add_argument("--dir", help=dir_help)
    up.add_argument("--executors", type=int, default=None,
                    help="executor processes (default: one per core)")
    up.add_argument("--port-offset", type=int, default=0,
                    help="added to every port, to run several clusters (default 0)")
    up.add_argument("--timeout", type=float, default=60.0,
                    help="seconds each daemon may take to become healthy")
    up.set_defaults(handler=_cmd_up)
    down = sub.add_parser("down", help="stop the local cluster")
    down.add_argument("--dir", help=dir_help)
    down.add_argument("--grace", type=float, default=10.0,
                      help="seconds between SIGTERM and SIGKILL (default 10)")
    down.set_defaults(handler=_cmd_down)
    status = sub.add_parser("status", help="show daemons, executors, functions, disk use")
    status.add_argument("--dir", help=dir_help)
    status.set_defaults(handler=_cmd_status)
    logs = sub.add_parser("logs", help="print or follow the daemons' logs")
    logs.add_argument("daemon", nargs="?", choices=_cluster.ORDER, help="one daemon's log")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--dir", help=dir_help)
    logs.set_defaults(handler=_cmd_logs)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``squall`` command, one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="squall",
        description="squall: stateful functions-as-a-service backed by a lattice KVS.")
    parser.add_argument("--version", action="version", version=f"squall {squall.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    version = sub.add_parser("version", help="print the version of squall")
    version.set_defaults(handler=_cmd_version)
    _add_cluster_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``squall`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status: 0 on success, 2 for a usage error (unknown or missing
    command, as argparse does).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --version, --help and usage errors exit from argparse
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        print("squall: error: missing COMMAND (try 'squall --help')", file=sys.stderr)
        return 2
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
