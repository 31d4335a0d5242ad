"""``lrservice train-controller``: train the learned LR controller (1909.09712) with RLlib PPO.

    lrservice train-controller --config configs/digits-mlp.yaml
    lrservice train-controller --config configs/digits-mlp.yaml --iterations 40 --resume
    lrservice train-controller --config configs/digits-mlp.yaml --output results/ctrl-a

Prints one line per PPO iteration, checkpoints every controller.checkpoint_every iterations
and at the end into OUTPUT/checkpoints/iter_N, and logs iterations to OUTPUT/training_log.parquet.
"""

from __future__ import annotations

import argparse

from lrservice import api
from lrservice.commands.options import add_run_options, load_run_config, progress


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train-controller", help="train the learned LR controller with RLlib PPO",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--iterations", type=int, default=None,
                        help="total PPO iterations (default: controller.iterations); with --resume, the total to reach")
    parser.add_argument("--output", default=None, help="output directory (default: controller.checkpoint_dir)")
    add_run_options(parser, resume_help="continue from the newest checkpoint in the output dir", overwrite=False)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    api.train_controller(load_run_config(args), iterations=args.iterations, resume=args.resume,
                         output_dir=args.output, log=progress)
    return 0
