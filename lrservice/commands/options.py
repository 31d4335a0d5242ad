"""Options every run command shares (config file, resume/overwrite, --download, --address) and
the one way they become a validated :class:`~lrservice.config.RunConfig`."""

from __future__ import annotations

import argparse

from lrservice.config import RunConfig, load_config
from lrservice.runtime import add_address_argument


def add_run_options(parser: argparse.ArgumentParser, *, resume_help: str, overwrite: bool = True) -> None:
    """Add ``--config``, ``--resume``, optionally ``--overwrite``, ``--download`` and ``--address``."""
    parser.add_argument("--config", required=True, help="YAML/JSON run config (see configs/)")
    parser.add_argument("--resume", action="store_true", help=resume_help)
    if overwrite:
        parser.add_argument("--overwrite", action="store_true",
                            help="delete an existing run dir of the same name first")
    parser.add_argument("--download", action="store_true", help="let torchvision datasets download into task.data_dir")
    add_address_argument(parser)


def load_run_config(args: argparse.Namespace, **section_updates: dict) -> RunConfig:
    """The config file with the command line applied: ``--address``, ``--download`` and per-section fields."""
    config = load_config(args.config)
    changes: dict[str, dict] = {}
    if args.address:
        changes["resources"] = {"address": args.address}
    if args.download:
        changes["task"] = {"download": True}
    for section, fields in section_updates.items():
        changes.setdefault(section, {}).update(fields)
    return config.replace(**changes) if changes else config


def progress(line: str) -> None:
    """Progress lines go to stdout unbuffered, so job logs and pipes see them as they happen."""
    print(line, flush=True)
