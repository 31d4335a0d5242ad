"""``lrservice recommend``: find an LR policy that reaches a target accuracy within a step budget, fastest.

    lrservice recommend --config configs/digits-mlp.yaml --target-accuracy 0.95 --budget 600
    lrservice recommend --config ... --target-accuracy 0.95 --budget 600 --resume   # continue

Searches the LRBench zoo with ASHA on Ray Tune, composes the best policies, verifies the
top candidates and FIX at the base LR on fresh seeds, and writes Parquet, report.md and
recommended.yaml (a ``compare`` arm) under recommend.output_dir/recommend.name.
"""

from __future__ import annotations

import argparse

from lrservice import api
from lrservice.commands.options import add_run_options, load_run_config, progress


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "recommend", help="recommend and compose LR policies that reach a target accuracy fastest (LRBench)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--target-accuracy", type=float, default=None,
                        help="validation accuracy to reach (default: recommend.target_accuracy)")
    parser.add_argument("--budget", type=int, default=None, help="training steps per run (default: recommend.budget)")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="zoo policies to sample (default: recommend.num_samples)")
    add_run_options(parser, resume_help="continue the run in recommend.output_dir/recommend.name")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    api.recommend(load_run_config(args), target_accuracy=args.target_accuracy, budget=args.budget,
                  num_samples=args.num_samples, resume=args.resume, overwrite=args.overwrite, log=progress)
    return 0
