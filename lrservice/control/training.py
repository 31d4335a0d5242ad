"""The controller's PPO training loop: progress lines, checkpoints, resume, a Parquet log.

Output directory layout (``output_dir``)::

    checkpoints/iter_000005/      algo.save_to_path(...) plus controller.json (task + controller
                                  sections, so a checkpoint knows its action semantics)
    LATEST                        the name of the newest complete checkpoint
    controller.pt                 that checkpoint exported: the deployable controller (no RLlib needed)
    training_log.parquet          one row per PPO iteration (see LOG_COLUMNS), written atomically

``--resume`` rebuilds the algorithm from the current config, restores the newest checkpoint
and continues up to the requested total number of iterations; log rows past that checkpoint
(work that was lost) are dropped.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from lrservice.config import ConfigError, RunConfig, config_from_dict
from lrservice.control.checkpoint import (EXPORT_FILE, export_controller, latest_checkpoint, read_metadata,
                                          save_checkpoint)
from lrservice.files import write_parquet

Log = Callable[[str], None]
LOG_FILE = "training_log.parquet"
LOG_COLUMNS = (
    "iteration", "episode_return_mean", "episode_len_mean", "final_val_loss", "final_val_accuracy",
    "diverged_frac", "lr_start", "lr_min", "lr_median", "lr_max", "lr_end", "episodes",
    "episodes_lifetime", "episodes_per_s", "env_steps", "env_steps_lifetime", "env_steps_per_s",
    "child_steps_lifetime", "child_steps_per_s", "ppo_lr", "iteration_s", "wall_s", "checkpoint",
)


def children_note(config: RunConfig) -> str:
    """How each env runner trains its children, for the progress line: one child per env
    (``LRControlEnv``) or a pool per task (``LRVectorEnv``) whose mode :func:`pool_mode` decides
    here as the runners will (on CPU; a runner without the dataset decides for itself)."""
    from lrservice.child.data import DatasetUnavailable
    from lrservice.child.pool import pool_mode
    from lrservice.child.trainer import load_task_data
    from lrservice.control.actions import episode_tasks

    if config.controller.num_envs_per_env_runner == 1:
        return "separate (one child per env runner: controller.num_envs_per_env_runner is 1)"
    modes = []
    for task in episode_tasks(config.task, config.controller):
        try:
            mode = pool_mode(task, load_task_data(task), device="cpu")
        except DatasetUnavailable:
            mode = "decided on each env runner (the dataset is not on this machine)"
        modes.append(f"{task.dataset}/{task.model} {mode}")
    return "; ".join(dict.fromkeys(modes))


def child_steps_per_env_step(config: RunConfig) -> int:
    """Child steps one env step costs: ``action_every``, twice with twins (the training's compute)."""
    c = config.controller
    return c.action_every * (2 if c.baseline == "twin" else 1)


def _metric(results: Mapping[str, Any], key: str) -> float:
    value = results.get(key)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


def iteration_row(result: Mapping[str, Any], iteration: int, steps_before: float, seconds: float,
                  wall: float, child_steps_per_env: int = 1) -> dict:
    """One log row from an ``algo.train()`` result."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.learner.learner import DEFAULT_OPTIMIZER, LR_KEY

    from lrservice.control.ppo import DIVERGED, FINAL_VAL_ACCURACY, FINAL_VAL_LOSS, LR_KEYS

    runners = result.get("env_runners", {})
    lifetime = _metric(runners, "num_env_steps_sampled_lifetime")
    if math.isnan(lifetime):
        lifetime = _metric(result, "num_env_steps_sampled_lifetime")
    steps = lifetime - steps_before
    row = {
        "iteration": iteration,
        "episode_return_mean": _metric(runners, "episode_return_mean"),
        "episode_len_mean": _metric(runners, "episode_len_mean"),
        "final_val_loss": _metric(runners, FINAL_VAL_LOSS),
        "final_val_accuracy": _metric(runners, FINAL_VAL_ACCURACY),
        "diverged_frac": _metric(runners, DIVERGED),
        **{key: _metric(runners, key) for key in LR_KEYS},
        "episodes": _metric(runners, "num_episodes"),
        "episodes_lifetime": _metric(runners, "num_episodes_lifetime"),
        "episodes_per_s": _metric(runners, "num_episodes") / seconds if seconds > 0 else math.nan,
        "env_steps": steps,
        "env_steps_lifetime": lifetime,
        "env_steps_per_s": steps / seconds if seconds > 0 else math.nan,
        "child_steps_lifetime": lifetime * child_steps_per_env,
        "child_steps_per_s": steps * child_steps_per_env / seconds if seconds > 0 else math.nan,
        "ppo_lr": _metric(result.get("learners", {}).get(DEFAULT_MODULE_ID, {}), f"{DEFAULT_OPTIMIZER}_{LR_KEY}"),
        "iteration_s": seconds,
        "wall_s": wall,
        "checkpoint": "",
    }
    return row


def progress_line(row: Mapping[str, Any], total: int) -> str:
    """``[lrservice] iter 3/20 return -41.2 final val loss 0.312 lr 1e-03->2.1e-03 (min .. max) ...``."""
    return (f"[lrservice] iter {row['iteration']}/{total}  return {row['episode_return_mean']:.3f}  "
            f"final val loss {row['final_val_loss']:.4f}  "
            f"lr {row['lr_start']:.2e}->{row['lr_end']:.2e} (min {row['lr_min']:.2e} median {row['lr_median']:.2e} "
            f"max {row['lr_max']:.2e})  episodes {row['episodes_lifetime']:.0f} ({row['episodes_per_s']:.2f}/s)  "
            f"{row['env_steps_per_s']:.1f} env steps/s  {row['child_steps_per_s']:.0f} child steps/s  "
            f"ppo lr {row['ppo_lr']:.1e}  "
            f"{row['iteration_s']:.1f} s/iter  wall {row['wall_s']:.0f} s")


def write_log(rows: list[dict], path: Path) -> None:
    """The training log as Parquet, atomically (:func:`lrservice.files.write_parquet`)."""
    import pyarrow as pa

    columns = {name: [row.get(name) for row in rows] for name in LOG_COLUMNS}
    fields = [pa.field(name, pa.string() if name == "checkpoint" else
                       pa.int64() if name == "iteration" else pa.float64()) for name in LOG_COLUMNS]
    write_parquet(pa.table(columns, schema=pa.schema(fields)), path)


def read_log(path: str | os.PathLike) -> list[dict]:
    import pyarrow.parquet as pq

    path = Path(path)
    return pq.read_table(path).to_pylist() if path.is_file() else []


def train_controller(config: RunConfig, output_dir: str | os.PathLike, iterations: int | None = None,
                     resume: bool = False, log: Log = print) -> Path:
    """Train the controller with PPO; returns the final checkpoint directory.

    Connects to Ray (``config.resources``) if it is not initialised, plans placement from
    the cluster, trains ``iterations`` PPO iterations in total (default
    ``controller.iterations``), checkpoints every ``controller.checkpoint_every`` and at the end.
    """
    from lrservice.control.ppo import build_ppo_config
    from lrservice.runtime import connect, plan_placement

    total = int(iterations if iterations is not None else config.controller.iterations)
    if total < 1:
        raise ConfigError(f"iterations: {total!r} is not allowed; it must be an integer >= 1")
    out = Path(output_dir).expanduser().resolve()
    start = latest_checkpoint(out)
    if start is not None and not resume:
        raise ConfigError(f"--output: {str(out)!r} already holds controller checkpoints ({start.name}); "
                          "pass --resume to continue them, or choose another output directory")
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG_FILE
    if start is not None:
        meta = read_metadata(start)
        _check_same_sections(config, meta, start)
        done, steps = int(meta["iteration"]), float(meta["env_steps"])
        rows = [r for r in read_log(log_path) if r["iteration"] <= done]
        if done >= total:
            log(f"[lrservice] controller: {start} already has {done} of {total} iterations; nothing to do")
            return start
    else:
        done, steps, rows = 0, 0.0, []
        if resume:
            log(f"[lrservice] controller: no checkpoint in {out} to resume; starting from scratch")

    connect(config.resources, log=log)
    placement = plan_placement(config.resources)
    log(f"[lrservice] controller placement: {placement.note}")
    algo = build_ppo_config(config, placement, iterations=total).build_algo()
    try:
        if start is not None:
            algo.restore_from_path(str(start))
            log(f"[lrservice] controller: resumed from {start} (iteration {done})")
        c = config.controller
        log(f"[lrservice] controller: PPO on {config.task.dataset}/{config.task.model}, "
            f"{config.task.steps} child steps per episode, action every {c.action_every}, "
            f"{c.action_space} actions, {c.num_env_runners} env runner(s) x {c.num_envs_per_env_runner} env(s), "
            f"train batch {c.train_batch_size}; iterations {done + 1}..{total}")
        log(f"[lrservice] children: {children_note(config)}")
        began = time.perf_counter()
        wall_before = rows[-1]["wall_s"] if rows else 0.0
        path = start
        for iteration in range(done + 1, total + 1):
            t0 = time.perf_counter()
            result = algo.train()
            row = iteration_row(result, iteration, steps, time.perf_counter() - t0,
                                wall_before + time.perf_counter() - began, child_steps_per_env_step(config))
            if not math.isnan(row["env_steps_lifetime"]):
                steps = row["env_steps_lifetime"]
            if iteration % c.checkpoint_every == 0 or iteration == total:
                path = save_checkpoint(algo, config, out, iteration, steps,
                                       child_steps=row["child_steps_lifetime"], episodes=row["episodes_lifetime"])
                export_controller(path, out / EXPORT_FILE)
                row["checkpoint"] = str(path)
            rows.append(row)
            write_log(rows, log_path)
            log(progress_line(row, total))
        log(f"[lrservice] controller: {total} iterations done; checkpoint {path}; log {log_path}")
        return path
    finally:
        algo.stop()


def _check_same_sections(config: RunConfig, meta: Mapping[str, Any], checkpoint: Path) -> None:
    """Resuming with another task or env semantics would mix two problems in one policy."""
    stored = config_from_dict({"task": meta["task"], "controller": meta["controller"]})
    env_fields = ("features", "action_space", "action_every", "factor", "factors", "levels", "lr_min", "lr_max", "reward",
                  "baseline", "twin_policy", "envelope", "tasks", "hidden")
    for name in env_fields:
        if getattr(stored.controller, name) != getattr(config.controller, name):
            raise ConfigError(f"controller.{name}: {getattr(config.controller, name)!r} differs from the "
                              f"checkpoint being resumed ({checkpoint}: {getattr(stored.controller, name)!r}); "
                              "use the same value or another output directory")
