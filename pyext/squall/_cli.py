"""The ``squall`` console command.

One argparse parser with a subcommand per action, so that later commands (``up``,
``down``, ``status``, ``logs``) are one ``add_parser`` call each. ``main`` returns the
exit status instead of calling ``sys.exit`` so tests can call it directly.

    squall --version        print the version and exit
    squall version          the same, as a subcommand
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

import squall


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"squall {squall.__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``squall`` command, one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="squall",
        description="squall: stateful functions-as-a-service backed by a lattice KVS.")
    parser.add_argument("--version", action="version", version=f"squall {squall.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    version = sub.add_parser("version", help="print the version of squall")
    version.set_defaults(handler=_cmd_version)
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
