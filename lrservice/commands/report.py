"""``lrservice report RUN_DIR``: the ranked table and plots from a comparison's Parquet files.

    lrservice report results/digits-mlp
"""

from __future__ import annotations

import argparse


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
    from lrservice.compare.report import build_report, load_run  # pandas, matplotlib: on use, for `--help`
    from lrservice.compare.tensorboard import write_tensorboard

    steps, _ = load_run(args.run_dir)
    board = write_tensorboard(steps, args.run_dir)
    print(f"[lrservice] TensorBoard: tensorboard --logdir {board}", flush=True)
    build_report(args.run_dir, log=lambda line: print(line, flush=True), echo=True)
    return 0
