"""The command line: shared run options, clean one-line errors, no traceback for user mistakes."""

from __future__ import annotations

import argparse

import pytest

from lrservice.cli import build_parser, main
from lrservice.commands.options import add_run_options, load_run_config


def parse(argv):
    parser = argparse.ArgumentParser()
    add_run_options(parser, resume_help="resume")
    return parser.parse_args(argv)


def test_run_options_apply_address_download_and_section_fields(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: {steps: 40}\n")
    config = load_run_config(parse(["--config", str(cfg), "--address", "10.0.0.1:6379", "--download"]),
                             recommend={"budget": 40})
    assert config.resources.address == "10.0.0.1:6379"
    assert config.task.download is True and config.task.steps == 40
    assert config.recommend.budget == 40
    plain = load_run_config(parse(["--config", str(cfg)]))
    assert plain.resources.address is None and plain.task.download is False


@pytest.mark.parametrize("command", ["compare", "recommend"])
def test_resume_and_overwrite_together_is_a_clear_error(tmp_path, capsys, command):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("{}\n")
    assert main([command, "--config", str(cfg), "--resume", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "lrservice: invalid config: --resume and --overwrite: choose one"


def test_invalid_config_value_exits_2_naming_the_field(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: {dataset: imagenet}\n")
    assert main(["train-controller", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "task.dataset: 'imagenet' is not allowed; choose one of: digits, mnist, fashion_mnist, cifar10" in err
    assert "Traceback" not in err


def test_every_command_is_registered():
    text = build_parser().format_help()
    for name in ("compare", "train-controller", "recommend", "report", "schedule"):
        assert name in text
