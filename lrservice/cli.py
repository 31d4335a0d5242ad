"""The ``lrservice`` command line: one subcommand per module in :mod:`lrservice.commands`.

Each command module provides ``add_parser(subparsers)``, which registers its parser and
sets ``func=run``; ``run(args) -> int`` does the work. Modules import Ray, torch, pandas
and matplotlib inside ``run`` so ``lrservice --help`` stays fast (numbers in
docs/architecture.md).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lrservice.config import ConfigError
from lrservice.schedules import PolicyError

COMMANDS = ("compare", "train_controller", "evaluate_controller", "recommend", "report", "schedule")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrservice",
        description="Learning-rate schedules on Ray: compare, learn (PPO controller), recommend (LRBench).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"lrservice.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"lrservice: invalid config: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lrservice: interrupted; rerun the same command with --resume to continue", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        print(f"lrservice: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    """A user error is one stderr line, whatever the message held."""
    return " ".join(str(exc).split())


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is already the whole story for a user (no traceback).

    Called only once an error is raised: ``lrservice.child`` imports torch, which ``--help`` must not pay.
    """
    from lrservice.child.data import DatasetUnavailable

    return (DatasetUnavailable, FileNotFoundError, ConnectionError, PolicyError)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
