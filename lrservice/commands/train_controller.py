"""``lrservice train-controller``: train the learned LR controller (1909.09712) with RLlib PPO.

    lrservice train-controller --config configs/digits-mlp.yaml
    lrservice train-controller --config configs/digits-mlp.yaml --iterations 40 --resume
    lrservice train-controller --config configs/digits-mlp.yaml --output results/ctrl-a

Prints one line per PPO iteration, checkpoints every controller.checkpoint_every iterations
and at the end into OUTPUT/checkpoints/iter_N, and logs iterations to OUTPUT/training_log.parquet.
Each checkpoint is exported as OUTPUT/last.pt. With controller.selection_seeds every checkpoint
is scored on those seeds against tuned cosine (one line each, into OUTPUT/selection.parquet) and
OUTPUT/controller.pt is the best one; without, controller.pt is the newest (docs/controller.md).
"""

from __future__ import annotations

import argparse

from lrservice.commands.options import add_run_options, load_run_config, progress
from lrservice.config import ConfigError


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
    if args.iterations is not None and args.iterations < 1:
        raise ConfigError(f"--iterations: {args.iterations!r} is not allowed; it must be an integer >= 1")
    config = load_run_config(args)
    import torch  # Ray and torch: on use, so `lrservice --help` stays fast (docs/architecture.md)

    torch.set_num_threads(1)
    from lrservice.control.training import train_controller

    output = args.output or config.controller.checkpoint_dir
    path = train_controller(config, output, iterations=args.iterations, resume=args.resume, log=progress)
    print(f"[lrservice] controller checkpoint: {path}", flush=True)  # the deployable export (job tests read this line)
    return 0
