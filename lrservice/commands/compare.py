"""``lrservice compare``: the Tune comparison of LR schedules, written to Parquet with a report.

    lrservice compare --config configs/digits-mlp.yaml
    lrservice compare --config configs/digits-mlp.yaml --resume      # continue an interrupted run
    lrservice compare --config configs/digits-mlp.yaml --overwrite   # start the run dir again
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    from lrservice.runtime import add_address_argument

    parser = subparsers.add_parser(
        "compare", help="compare LR schedules (tuned baselines, zoo, controller, PBT) with Ray Tune",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="YAML/JSON run config (see configs/)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in compare.output_dir/compare.name: skip finished phases, restore the interrupted one")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run dir of the same name first")
    parser.add_argument("--no-report", action="store_true", help="write Parquet only (run `lrservice report` later)")
    parser.add_argument("--download", action="store_true", help="let torchvision datasets download into task.data_dir")
    add_address_argument(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from lrservice.config import ConfigError, load_config
    from lrservice.runtime import with_address

    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite: choose one")
    config = load_config(args.config)
    changes = {"resources": with_address(config.resources, args.address)}
    if args.no_report:
        changes["compare"] = dataclasses.replace(config.compare, report=False)
    if args.download:
        changes["task"] = dataclasses.replace(config.task, download=True)
    config = config.replace(**changes)

    from lrservice.compare.experiment import run_compare

    run_compare(config, resume=args.resume, overwrite=args.overwrite, log=lambda line: print(line, flush=True))
    return 0
