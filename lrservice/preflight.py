"""Checks a run config must pass before any work starts (before Ray starts or attaches).

Each section validates itself when the config is loaded; what it cannot see is checked
here: rules across sections (PBT interval vs task length, held-out vs tune seeds, the
batched child's models vs a controller that must be trained), files the config names
(controller checkpoints) and what one command needs (recommend's LR range). A failure is
a :class:`ConfigError` naming the field, so the CLI prints one line and exits 2.
"""

from __future__ import annotations

import os
from pathlib import Path

from lrservice.config import ConfigError, RunConfig

BATCHED_MODELS = ("mlp", "lenet5")  # lrservice.child.batched.BATCHED_MODELS, kept import-free here


def check_compare(config: RunConfig) -> None:
    """Everything ``lrservice compare`` can know is wrong from its config alone."""
    from lrservice.compare.arms import resolve_params, validate_compare

    validate_compare(config)
    compare, task = config.compare, config.task
    overlap = sorted(set(compare.seeds) & set(compare.tune_seeds))
    if overlap and any(arm.grid for arm in compare.arms):
        raise ConfigError(f"compare.seeds: {overlap} also in compare.tune_seeds; held-out seeds must differ "
                          "from the seeds the grids are tuned on")
    for i, arm in enumerate(compare.arms):
        path = f"compare.arms[{i}].params"
        params = resolve_params(arm, arm.params, config)
        if arm.kind == "pbt" and params["interval"] >= task.steps:
            raise ConfigError(f"{path}.interval: {params['interval']!r} is not allowed; it must be below task.steps "
                              f"({task.steps}) or PBT never perturbs")
        if arm.kind == "controller":
            if params["checkpoint"] == "auto":
                check_controller_training(config, f"{path}.checkpoint")
            else:
                check_controller_checkpoint(params["checkpoint"], f"{path}.checkpoint")


def check_controller_training(config: RunConfig, why: str = "controller") -> None:
    """Training a controller with several envs per runner needs a batched child model."""
    ctrl = config.controller
    if ctrl.num_envs_per_env_runner > 1 and config.task.model not in BATCHED_MODELS:
        raise ConfigError(f"controller.num_envs_per_env_runner: {ctrl.num_envs_per_env_runner} needs a batched child, "
                          f"but task.model {config.task.model!r} is not one ({', '.join(BATCHED_MODELS)}); "
                          f"set it to 1 (needed by {why})")


def check_controller_checkpoint(path: str, field: str) -> None:
    """``path`` must be a controller checkpoint or a ``train-controller`` output dir."""
    from lrservice.control.controller import resolve_checkpoint

    p = Path(os.path.expanduser(path))
    if not p.exists():
        raise ConfigError(f"{field}: {path!r} does not exist; give a directory written by "
                          "`lrservice train-controller`, or 'auto'")
    try:
        resolve_checkpoint(p)
    except FileNotFoundError:
        raise ConfigError(f"{field}: {path!r} holds no controller checkpoint; give a directory written by "
                          "`lrservice train-controller`, or 'auto'") from None


def check_recommend(config: RunConfig) -> None:
    """The LR range resolves for the task's optimizer (base_lr inside [lr_min, lr_max])."""
    config.recommend.lr_range(config.task.optimizer)
