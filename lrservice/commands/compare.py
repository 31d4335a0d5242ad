"""``lrservice compare``: the Tune comparison of LR schedules, written to Parquet with a report.

    lrservice compare --config configs/digits-mlp.yaml
    lrservice compare --config configs/digits-mlp.yaml --resume      # continue an interrupted run
    lrservice compare --config configs/digits-mlp.yaml --overwrite   # start the run dir again
"""

from __future__ import annotations

import argparse

from lrservice.commands.options import add_run_options, load_run_config, progress


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compare", help="compare LR schedules (tuned baselines, zoo, controller, PBT) with Ray Tune",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_options(parser, resume_help="continue the run in compare.output_dir/compare.name: "
                                        "skip finished phases, restore the interrupted one")
    parser.add_argument("--no-report", action="store_true", help="write Parquet only (run `lrservice report` later)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from lrservice.compare.arms import check_compare

    config = load_run_config(args, **({"compare": {"report": False}} if args.no_report else {}))
    check_compare(config)  # everything the config file can tell, before Ray starts (or is imported)
    from lrservice.compare.experiment import (
        run_compare,  # Ray and torch: on use, so `lrservice --help` stays fast (docs/architecture.md)
    )

    run_compare(config, resume=args.resume, overwrite=args.overwrite, log=progress, checked=True)
    return 0
