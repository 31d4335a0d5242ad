"""``lrservice report RUN_DIR``: the ranked table and plots from a comparison's Parquet files.

    lrservice report results/digits-mlp
"""

from __future__ import annotations

import argparse

from lrservice import api
from lrservice.commands.options import progress


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report", help="ranked table, plots and report.md/html from a compare run dir",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir",
                        help="a run dir written by `lrservice compare` (holds steps.parquet, trials.parquet)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    api.report(args.run_dir, log=progress)
    return 0
