"""Arms as trial specs: validate each arm's params, expand grids, pick winners. No Ray.

A *trial spec* is the plain dict a Tune trial receives as its config: which arm and
kind, the concrete ``params`` (a grid point), the seed, the phase, and the task. Specs
are JSON-ready so they can be stored in Parquet (``params``) and in Tune's state.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from typing import Any, Iterable, Mapping

from lrservice.config import ArmConfig, ConfigError, RunConfig
from lrservice.schedules import BASELINES, PolicyError, make_baseline, policy_from_dict

PBT_DEFAULTS = {"lr_min": 1e-4, "lr_max": 1e-1, "population": 4}
CONTROLLER_KEYS = ("checkpoint", "lr")
AUTO = "auto"


def grid_points(arm: ArmConfig) -> list[dict]:
    """Every combination of the arm's grid merged over its fixed params, in grid order."""
    if not arm.grid:
        return [dict(arm.params)]
    keys = list(arm.grid)
    return [{**arm.params, **dict(zip(keys, combo))} for combo in itertools.product(*(arm.grid[k] for k in keys))]


def resolve_params(arm: ArmConfig, params: Mapping[str, Any], config: RunConfig) -> dict:
    """Fill defaults that depend on the task (cosine ``total_steps``, controller ``lr``)."""
    out = dict(params)
    if arm.kind == "cosine":
        out.setdefault("total_steps", config.task.steps)
    if arm.kind == "controller":
        ctrl = config.controller
        out.setdefault("checkpoint", AUTO)
        out.setdefault("lr", ctrl.initial_lr if ctrl.initial_lr is not None else sorted(ctrl.initial_lrs)[len(ctrl.initial_lrs) // 2])
    if arm.kind == "pbt":
        for key, value in PBT_DEFAULTS.items():
            out.setdefault(key, value)
        out.setdefault("interval", max(config.task.eval_every, config.task.steps // 10))
    return out


def validate_arm(arm: ArmConfig, config: RunConfig, path: str) -> None:
    """Check every grid point builds (baseline, policy) or is well formed (controller, pbt)."""
    if arm.kind == "pbt" and arm.grid:
        raise ConfigError(f"{path}.grid: {arm.grid!r} is not allowed for kind 'pbt'; PBT tunes the LR itself (set params lr_min, lr_max, population, interval)")
    for point in grid_points(arm):
        params = resolve_params(arm, point, config)
        try:
            if arm.kind in BASELINES:
                make_baseline(arm.kind, **params)
            elif arm.kind == "policy":
                policy_from_dict(params)
        except PolicyError as exc:
            raise ConfigError(f"{path}.params: {params!r} is not allowed for kind {arm.kind!r}: {exc}") from None
        if arm.kind == "controller":
            unknown = sorted(set(params) - set(CONTROLLER_KEYS))
            if unknown:
                raise ConfigError(f"{path}.params.{unknown[0]}: unknown key; a controller arm takes: {', '.join(CONTROLLER_KEYS)}")
            _positive_number(f"{path}.params.lr", params["lr"])
            if not isinstance(params["checkpoint"], str):
                raise ConfigError(f"{path}.params.checkpoint: {params['checkpoint']!r} is not allowed; give a checkpoint directory or 'auto'")
        if arm.kind == "pbt":
            unknown = sorted(set(params) - {*PBT_DEFAULTS, "interval"})
            if unknown:
                raise ConfigError(f"{path}.params.{unknown[0]}: unknown key; a pbt arm takes: lr_min, lr_max, population, interval")
            _positive_number(f"{path}.params.lr_min", params["lr_min"])
            _positive_number(f"{path}.params.lr_max", params["lr_max"])
            if params["lr_min"] >= params["lr_max"]:
                raise ConfigError(f"{path}.params.lr_min: {params['lr_min']!r} must be below lr_max ({params['lr_max']!r})")
            pop = params["population"]
            if isinstance(pop, bool) or not isinstance(pop, int) or pop < 4:
                raise ConfigError(f"{path}.params.population: {pop!r} is not allowed; it must be an integer >= 4 (PBT with fewer exploits nobody)")
            interval = params["interval"]
            if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0 or interval % config.task.eval_every:
                raise ConfigError(f"{path}.params.interval: {interval!r} is not allowed; it must be a positive multiple of task.eval_every ({config.task.eval_every})")


def validate_compare(config: RunConfig) -> None:
    """Validate every arm of ``config.compare`` (field paths as in the config file)."""
    for i, arm in enumerate(config.compare.arms):
        validate_arm(arm, config, f"compare.arms[{i}]")
    if config.task.steps % config.task.eval_every:
        raise ConfigError(f"task.steps: {config.task.steps} is not allowed for compare; it must be a multiple of task.eval_every ({config.task.eval_every})")


def _positive_number(path: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{path}: {value!r} is not allowed; it must be a finite number > 0")


def trial_spec(config: RunConfig, run_id: str, phase: str, arm: ArmConfig, params: Mapping[str, Any], seed: int) -> dict:
    """The config one Tune trial receives."""
    return {
        "run_id": run_id,
        "phase": phase,
        "arm": arm.name,
        "kind": arm.kind,
        "params": resolve_params(arm, params, config),
        "seed": int(seed),
        "task": _plain(config.task),
        "controller": _plain(config.controller),
        "target_accuracy": config.compare.target_accuracy,
        "checkpoint_every": config.compare.checkpoint_every,
    }


def tune_specs(config: RunConfig, run_id: str) -> list[dict]:
    """Phase "tune": every grid point of every arm with a grid, on each tune seed."""
    return [trial_spec(config, run_id, "tune", arm, point, seed)
            for arm in config.compare.arms if arm.grid and arm.kind != "pbt"
            for point in grid_points(arm) for seed in config.compare.tune_seeds]


def eval_specs(config: RunConfig, run_id: str, winners: Mapping[str, dict]) -> list[dict]:
    """Phase "eval": each non-PBT arm's winner (or fixed params) on every held-out seed."""
    specs = []
    for arm in config.compare.arms:
        if arm.kind == "pbt":
            continue
        params = dict(winners.get(arm.name, arm.params))
        specs.extend(trial_spec(config, run_id, "eval", arm, params, seed) for seed in config.compare.seeds)
    return specs


def pick_winners(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict]:
    """Per arm, the params with the lowest mean final validation loss over tune seeds.

    ``rows`` carry ``arm``, ``params`` (dict) and ``final_val_loss``; a diverged or
    missing loss counts as +inf so a stable point always beats an unstable one. Ties go
    to the first grid point seen.
    """
    groups: dict[str, dict[str, tuple[dict, list[float]]]] = {}
    for row in rows:
        key = _key(row["params"])
        loss = row.get("final_val_loss")
        value = float(loss) if loss is not None and math.isfinite(float(loss)) and not row.get("diverged") else math.inf
        groups.setdefault(row["arm"], {}).setdefault(key, (dict(row["params"]), []))[1].append(value)
    winners = {}
    for arm, points in groups.items():
        best = min(points.values(), key=lambda pv: sum(pv[1]) / len(pv[1]))
        winners[arm] = best[0]
    return winners


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _plain(section: Any) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(section).items()}
