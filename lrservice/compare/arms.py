"""Arms as trial specs: validate each arm's params, expand grids, pick winners. No Ray.

A *trial spec* is the plain dict a Tune trial receives as its config: which arm and
kind, the concrete ``params`` (a grid point), the seed, the phase, and the task. Specs
are JSON-ready so they can be stored in Parquet (``params``) and in Tune's state. What a
kind allows and how it runs is its :class:`lrservice.kinds.ArmKind`'s business.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

from lrservice import kinds
from lrservice.config import ArmConfig, ConfigError, RunConfig
from lrservice.kinds import get_kind, tuned_winners
from lrservice.preflight import check_controller_checkpoint


def grid_points(arm: ArmConfig) -> list[dict]:
    """Every combination of the arm's grid merged over its fixed params, in grid order."""
    return kinds.grid_points(arm.params, arm.grid)


def resolve_params(arm: ArmConfig, params: Mapping[str, Any], config: RunConfig) -> dict:
    """Fill defaults that depend on the task (e.g. ``total_steps``, a controller's ``lr``)."""
    return get_kind(arm.kind).resolve(params, config)


def validate_arm(arm: ArmConfig, config: RunConfig, path: str) -> None:
    """Check every grid point of ``arm`` against its kind (one-line errors naming ``path.params.X``)."""
    kind = get_kind(arm.kind, f"{path}.kind")
    if arm.grid and not kind.tunable:
        raise ConfigError(f"{path}.grid: {arm.grid!r} is not allowed for kind {arm.kind!r}; "
                          f"set its params instead ({kind.describe()})")
    for point in grid_points(arm):
        kind.validate(kind.resolve(point, config), path, config)


def validate_compare(config: RunConfig) -> None:
    """Every check ``compare`` can make from its config alone, before any work starts."""
    compare, task = config.compare, config.task
    for i, arm in enumerate(compare.arms):
        validate_arm(arm, config, f"compare.arms[{i}]")
    if task.steps % task.eval_every:
        raise ConfigError(f"task.steps: {task.steps} is not allowed for compare; it must be a multiple of "
                          f"task.eval_every ({task.eval_every})")
    overlap = sorted(set(compare.seeds) & set(compare.tune_seeds))
    if overlap and any(arm.grid for arm in compare.arms):
        raise ConfigError(f"compare.seeds: {overlap} also in compare.tune_seeds; held-out seeds must differ "
                          "from the seeds the grids are tuned on")


def check_compare(config: RunConfig) -> None:
    """Everything ``lrservice compare`` can know is wrong from its config alone: :func:`validate_compare`
    plus every controller checkpoint an arm names (``auto`` is trained later)."""
    validate_compare(config)
    for i, arm in enumerate(config.compare.arms):
        checkpoint = get_kind(arm.kind).controller_checkpoint(resolve_params(arm, arm.params, config))
        if checkpoint is not None:
            check_controller_checkpoint(checkpoint, f"compare.arms[{i}].params.checkpoint")


def trial_spec(config: RunConfig, run_id: str, phase: str, arm: ArmConfig,
               children: Sequence[tuple[Mapping[str, Any], int]]) -> dict:
    """The config one Tune trial receives: one arm and its children, each ``(params, seed)``."""
    return {
        "run_id": run_id,
        "phase": phase,
        "arm": arm.name,
        "kind": arm.kind,
        "children": [{"params": resolve_params(arm, params, config), "seed": int(seed)} for params, seed in children],
        "task": _plain(config.task),
        "controller": _plain(config.controller),
        "target_accuracy": config.compare.target_accuracy,
        "checkpoint_every": config.compare.checkpoint_every,
    }


def tune_specs(config: RunConfig, run_id: str) -> list[dict]:
    """Phase "tune": one trial per arm with a grid, its children every grid point on each tune seed."""
    return [trial_spec(config, run_id, "tune", arm, [(point, seed) for point in grid_points(arm)
                                                    for seed in config.compare.tune_seeds])
            for arm in config.compare.arms if arm.grid and get_kind(arm.kind).tunable]


def eval_specs(config: RunConfig, run_id: str, winners: Mapping[str, dict]) -> list[dict]:
    """Phase "eval": one trial per arm, its children the arm's winner (or fixed params) on every held-out
    seed; PBT runs as a population."""
    return [trial_spec(config, run_id, "eval", arm, [(dict(winners.get(arm.name, arm.params)), seed)
                                                    for seed in config.compare.seeds])
            for arm in config.compare.arms if not get_kind(arm.kind).population]


def pick_winners(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict]:
    """Per arm, the params :func:`tuned_winners` picks: the eval phase runs them."""
    return {arm: params for arm, (params, _) in tuned_winners(rows).items()}


def _plain(section: Any) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(section).items()}
