"""Checks before any work starts that more than one command needs: controller files, recommend's LR range.

Each section validates itself when the config is loaded; each command owns the checks across
sections that only it needs (``compare``: :func:`lrservice.compare.arms.check_compare`;
``evaluate-controller``: :func:`lrservice.control.rivals.check_rivals`). A failure is a
:class:`ConfigError` naming the field, so the CLI prints one line and exits 2.
"""

from __future__ import annotations

from lrservice.config import ConfigError, RunConfig


def check_controller_checkpoint(path: str, field: str) -> None:
    """``path`` must name a controller: ``pretrained:NAME``, an export, a checkpoint or an output dir."""
    from lrservice.control.checkpoint import load_export, resolve_checkpoint  # torch: only when a controller is named

    try:
        where = resolve_checkpoint(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"{field}: {exc}; or give 'auto'") from None
    if where.is_file():
        load_export(where)  # a file that is not an export is one line too


def check_recommend(config: RunConfig) -> None:
    """The LR range resolves for the task's optimizer (base_lr inside [lr_min, lr_max])."""
    config.recommend.lr_range(config.task.optimizer)
