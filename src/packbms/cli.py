"""The ``packbms`` command: one module per subcommand in :mod:`packbms.commands`.

Each module defines ``add_subparser(subparsers)`` (registering its parser with
``set_defaults(run=run)``) and ``run(args) -> int``. A user error (any :class:`PackBMSError`)
prints one line ``error: ...`` on stderr and exits 2; ``--debug`` shows the traceback instead.
A command whose optional dependency is missing stays listed and says how to install it.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__, commands
from .errors import PackBMSError

#: Order of commands in ``--help``; modules found but not listed come after.
ORDER = ["analyze", "decode", "simulate", "demo", "monitor", "replay", "fleet", "report"]


def _command_modules() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    return [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (used by :func:`main` and the docs)."""
    parser = argparse.ArgumentParser(
        prog="packbms",
        description="Battery-pack analysis from CAN logs: per-cell SoC, imbalance, balancing "
                    "and cell quality.")
    parser.add_argument("--version", action="version", version=f"packbms {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        try:
            module = importlib.import_module(f"{commands.__name__}.{name}")
        except ModuleNotFoundError as e:
            missing = e.name
            p = sub.add_parser(name, help=f"(unavailable: needs {missing})")
            p.set_defaults(run=_unavailable(name, missing))
            continue
        module.add_subparser(sub)
    return parser


def _unavailable(name: str, missing: str):
    def run(args):
        raise PackBMSError(f"'packbms {name}' needs the package {missing!r}; install it with "
                           f"pip install {missing}")
    return run


def main(argv=None) -> int:
    """Entry point of the ``packbms`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except PackBMSError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
