"""``lrservice evaluate-controller``: does a learned controller beat tuned baselines? (no Ray needed)

    lrservice evaluate-controller --config configs/digits-mlp-controller.yaml --controller results/controller/digits-mlp
    lrservice evaluate-controller --config configs/mnist1d-mlp.yaml --controller a=ctrl-a.pt --controller b=ctrl-b.pt
    lrservice evaluate-controller --config configs/digits-mlp-controller.yaml --controller pretrained:digits-mlp \
        --seeds 1000-1099

Tunes constant and cosine on the config's evaluate grids and tune seeds, then runs them and
each controller (deterministic policy, from every initial LR) on held-out seeds, and writes
paired per-seed differences with 95% bootstrap CIs (see docs/controller.md). The child task
is the config's ``task`` section, so a controller trained elsewhere is evaluated zero-shot.
"""

from __future__ import annotations

import argparse

from lrservice import api
from lrservice.commands.options import load_run_config, progress
from lrservice.config import ConfigError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate-controller", help="compare learned controllers with tuned constant and cosine on held-out seeds",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="YAML/JSON run config: its task and evaluate sections")
    parser.add_argument("--controller", action="append", required=True, metavar="[NAME=]PATH",
                        help="exported controller (.pt), checkpoint or train-controller output dir; repeatable")
    parser.add_argument("--seeds", default=None, metavar="FIRST-LAST|S,S,...",
                        help="held-out seeds instead of evaluate.seeds, e.g. 1000-1099 (never the tune seeds)")
    parser.add_argument("--output", default=None, help="output directory (default: evaluate.output_dir)")
    parser.add_argument("--download", action="store_true", help="let torchvision datasets download into task.data_dir")
    parser.set_defaults(func=run, address=None, resume=False)
    return parser


def parse_seeds(spec: str) -> list[int]:
    """``--seeds``: an inclusive range ``FIRST-LAST`` or a comma-separated list of integers (the
    evaluate section then checks them like seeds from the file: distinct, non-negative, not tuned on)."""
    first, dash, last = spec.partition("-")
    try:
        seeds = list(range(int(first), int(last) + 1)) if dash else [int(s) for s in spec.split(",")]
    except ValueError:
        seeds = []
    if not seeds:
        raise ConfigError(f"--seeds: {spec!r} is not allowed; give FIRST-LAST (e.g. 1000-1099) or integers "
                          "separated by commas")
    return seeds


def run(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds) if args.seeds else None
    api.evaluate_controller(load_run_config(args), args.controller, seeds=seeds, output_dir=args.output, log=progress)
    return 0
