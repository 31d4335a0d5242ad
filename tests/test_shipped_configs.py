"""Every config the README and docs point users at loads and validates (a typo there is a user's first error)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrservice.compare.arms import check_compare
from lrservice.config import load_config
from lrservice.control.rivals import check_rivals

CONFIGS = sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))


def test_configs_are_found():
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parent.parent)))
def test_shipped_config_loads(path):
    config = load_config(path)
    check_compare(config)  # every arm's every grid point is valid for its kind
    check_rivals(config)
    for i, task in enumerate(config.controller.tasks):  # multi-task configs: each task a real, loadable dataset
        assert task.dataset in ("digits", "mnist1d"), f"controller.tasks[{i}] needs no download"
