"""The controller's PPO training loop: progress lines, checkpoints, resume, a Parquet log.

Output directory layout (``output_dir``)::

    checkpoints/iter_000005/      algo.save_to_path(...) plus controller.json (task + controller
                                  sections, so a checkpoint knows its action semantics)
    LATEST                        the name of the newest complete checkpoint
    last.pt                       that checkpoint exported (no RLlib needed to run it)
    controller.pt                 the deployable controller: the selection pick, else the same as last.pt
    selection.parquet             with controller.selection_seeds: one row per scored checkpoint and
    selection.json                initial LR (lrservice.control.selection); the cached tuned cosine, the pick
    training_log.parquet          one row per PPO iteration (see LOG_COLUMNS), written atomically

``--resume`` rebuilds the algorithm from the current config, restores the newest checkpoint
and continues up to the requested total number of iterations; log rows and selection rows past
that checkpoint (work that was lost) are dropped, and scored checkpoints are not rescored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from lrservice.config import ConfigError, RunConfig, stored_sections
from lrservice.control.checkpoint import (
    ACTION_FIELDS,
    CHECKPOINTS,
    EXPORT_FILE,
    LAST_FILE,
    checkpoint_iteration,
    export_controller,
    kept_checkpoints,
    latest_checkpoint,
    read_metadata,
    save_checkpoint,
)
from lrservice.control.selection import (
    REUSED_FROM,
    SELECTION_COLUMNS,
    SELECTION_FILE,
    SELECTION_RECORD,
    checkpoint_line,
    marked,
    pick,
    read_selection,
    scores,
    write_selection,
)
from lrservice.files import write_atomic, write_json, write_parquet

Log = Callable[[str], None]
LOG_FILE = "training_log.parquet"
LOG_COLUMNS = (
    "iteration", "episode_return_mean", "episode_len_mean", "final_val_loss", "final_val_accuracy",
    "diverged_frac", "lr_start", "lr_min", "lr_median", "lr_max", "lr_end", "episodes",
    "episodes_lifetime", "episodes_per_s", "env_steps", "env_steps_lifetime", "env_steps_per_s",
    "child_steps_lifetime", "child_steps_per_s", "ppo_lr", "entropy_coeff", "kl_coeff", "mean_kl",
    "iteration_s", "wall_s", "checkpoint",
)


def children_note(config: RunConfig) -> str:
    """How each env runner trains its children, for the progress line: one child per env
    (``LRControlEnv``) or a pool per task (``LRVectorEnv``) whose mode :func:`pool_mode` decides
    here as the runners will (on CPU; a runner without the dataset decides for itself)."""
    from lrservice.child.data import DatasetUnavailable
    from lrservice.child.pool import pool_mode
    from lrservice.child.trainer import load_task_data
    from lrservice.control.actions import episode_tasks, task_labels

    if config.controller.num_envs_per_env_runner == 1:
        return "separate (one child per env runner: controller.num_envs_per_env_runner is 1)"
    modes = []
    tasks = episode_tasks(config.task, config.controller)
    for label, task in zip(task_labels(tasks), tasks):
        try:
            mode = pool_mode(task, load_task_data(task), device="cpu")
        except DatasetUnavailable:
            mode = "decided on each env runner (the dataset is not on this machine)"
        modes.append(f"{label} {mode}")
    return "; ".join(modes)


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
    from ray.rllib.algorithms.ppo.ppo import (
        LEARNER_RESULTS_CURR_ENTROPY_COEFF_KEY,
        LEARNER_RESULTS_CURR_KL_COEFF_KEY,
        LEARNER_RESULTS_KL_KEY,
    )
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.learner.learner import DEFAULT_OPTIMIZER, LR_KEY

    from lrservice.control.ppo import DIVERGED, FINAL_VAL_ACCURACY, FINAL_VAL_LOSS, LR_KEYS

    runners = result.get("env_runners", {})
    lifetime = _metric(runners, "num_env_steps_sampled_lifetime")
    if math.isnan(lifetime):
        lifetime = _metric(result, "num_env_steps_sampled_lifetime")
    steps = lifetime - steps_before
    learner = result.get("learners", {}).get(DEFAULT_MODULE_ID, {})
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
        "ppo_lr": _metric(learner, f"{DEFAULT_OPTIMIZER}_{LR_KEY}"),
        "entropy_coeff": _metric(learner, LEARNER_RESULTS_CURR_ENTROPY_COEFF_KEY),  # for the next update
        "kl_coeff": _metric(learner, LEARNER_RESULTS_CURR_KL_COEFF_KEY),  # adapted after this update
        "mean_kl": _metric(learner, LEARNER_RESULTS_KL_KEY),  # how far this update moved the policy
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
            f"ppo lr {row['ppo_lr']:.1e}  entropy {row['entropy_coeff']:.1e}  kl {row['mean_kl']:.1e} "
            f"(coeff {row['kl_coeff']:.2g})  "
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
    """Train the controller with PPO; returns the deployable controller, ``OUTPUT/controller.pt``.

    Connects to Ray (``config.resources``) if it is not initialised, plans placement from
    the cluster, trains ``iterations`` PPO iterations in total (default
    ``controller.iterations``), checkpoints every ``controller.checkpoint_every`` and at the end.
    Each checkpoint is exported as ``last.pt``; with ``controller.selection_seeds`` it is then
    scored (:class:`CheckpointSelection`) and ``controller.pt`` is the pick, else ``last.pt``.
    With ``controller.train_seeds``, one such run per seed and the pick across them
    (:mod:`lrservice.control.runs`).
    """
    from lrservice.control.ppo import build_ppo_config
    from lrservice.runtime import connect, plan_placement

    total = int(iterations if iterations is not None else config.controller.iterations)
    if total < 1:
        raise ConfigError(f"iterations: {total!r} is not allowed; it must be an integer >= 1")
    out = Path(output_dir).expanduser().resolve()
    if config.controller.train_seeds:  # several runs of the recipe, the pick across them
        from lrservice.control.runs import train_runs

        return train_runs(config, out, total, resume, log)
    start = newest_to_resume(out, resume)
    log_path = out / LOG_FILE
    if start is not None:
        meta = read_metadata(start)
        _check_same_sections(config, meta, start)
        done, steps = int(meta["iteration"]), float(meta["env_steps"])
        rows = [r for r in read_log(log_path) if r["iteration"] <= done]
    else:
        done, steps, rows = 0, 0.0, []
    selection = CheckpointSelection.open(config, out, done, log)  # a changed selection is refused before any work
    out.mkdir(parents=True, exist_ok=True)
    if start is not None and done >= total:
        log(f"[lrservice] controller: {start} already has {done} of {total} iterations; nothing to train")
        return _publish(out, start, selection, log)
    if start is None and resume:
        log(f"[lrservice] controller: no checkpoint in {out} to resume; starting from scratch")

    connect(config.resources, log=log)
    placement = plan_placement(config.resources)
    log(f"[lrservice] controller placement: {placement.note}")
    algo = build_ppo_config(config, placement, iterations=total).build_algo()
    try:
        if start is not None:
            algo.restore_from_path(str(start))
            log(f"[lrservice] controller: resumed from {start} (iteration {done})")
            _publish(out, start, selection, log)  # a checkpoint kept just before a crash is scored now
        c = config.controller
        log(f"[lrservice] controller: PPO on {config.task.dataset}/{config.task.model}, "
            f"{config.task.steps} child steps per episode, action every {c.action_every}, "
            f"{c.action_space} actions, {c.num_env_runners} env runner(s) x {c.num_envs_per_env_runner} env(s), "
            f"train batch {c.train_batch_size}; iterations {done + 1}..{total}"
            + (f"; selection on {len(c.selection_seeds)} seeds" if selection else "; no checkpoint selection"))
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
            keep = iteration % c.checkpoint_every == 0 or iteration == total
            if keep:
                path = save_checkpoint(algo, config, out, iteration, steps,
                                       child_steps=row["child_steps_lifetime"], episodes=row["episodes_lifetime"])
                row["checkpoint"] = str(path)
            rows.append(row)
            write_log(rows, log_path)
            log(progress_line(row, total))
            if keep:
                _publish(out, path, selection, log)
        deployed = out / EXPORT_FILE
        log(f"[lrservice] controller: {total} iterations done; checkpoint {path}; log {log_path}; "
            f"deployable controller {deployed}"
            + (f" (selection pick: {selection.picked_name()}; the newest is {out / LAST_FILE})" if selection else ""))
        return deployed
    finally:
        algo.stop()


def newest_to_resume(out: Path, resume: bool) -> Path | None:
    """The newest checkpoint in ``out`` (None: none); without ``resume`` one there is refused in one line,
    so a run never trains over another."""
    start = latest_checkpoint(out)
    if start is not None and not resume:
        raise ConfigError(f"--output: {str(out)!r} already holds controller checkpoints ({start.name}); "
                          "pass --resume to continue them, or choose another output directory")
    return start


def _publish(out: Path, newest: Path, selection: "CheckpointSelection | None", log: Log) -> Path:
    """Export the newest checkpoint as ``last.pt``; then ``controller.pt``: the pick, or a copy of ``last.pt``."""
    last = export_controller(newest, out / LAST_FILE)
    if selection is None:
        return write_atomic(out / EXPORT_FILE, lambda tmp: shutil.copyfile(last, tmp))
    return selection.score_pending(checkpoint_iteration(newest))


class CheckpointSelection:
    """Scores kept checkpoints on ``controller.selection_seeds`` and exports the pick as ``controller.pt``.

    Every task the controller trains on is scored (the run's ``task``, or each of
    ``controller.tasks``). Each task's tuned cosine (``evaluate.cosine_grid`` over
    ``evaluate.tune_seeds``, as ``evaluate-controller`` tunes it) and its runs on the selection
    seeds are computed once per output directory and cached in ``selection.json``; scored
    checkpoints are read back from ``selection.parquet`` on resume and never rescored. Children run
    in this process through :mod:`lrservice.control.evaluate` (no Ray); the rule is
    :mod:`lrservice.control.selection`.
    """

    def __init__(self, config: RunConfig, out: Path, rows: list[dict], record: dict, log: Log):
        from lrservice.control.actions import episode_tasks, task_labels

        self.config, self.out, self.rows, self.record, self.log = config, out, rows, record, log
        self.seeds = list(config.controller.selection_seeds)
        self.starts = list(config.controller.start_lrs)
        tasks = episode_tasks(config.task, config.controller)
        self.tasks = dict(zip(task_labels(tasks), tasks))
        self._data: dict[str, Any] = {}

    @classmethod
    def open(cls, config: RunConfig, out: Path, done: int, log: Log) -> "CheckpointSelection | None":
        """The selection of ``out`` resumed at iteration ``done`` (None: selection off, nothing recorded).

        Rows of checkpoints past ``done`` or gone (lost work) are dropped; if rows remain, the
        selection settings must be the ones ``selection.json`` recorded (else one ConfigError line).
        """
        kept = {checkpoint_iteration(p) for p in kept_checkpoints(out) if checkpoint_iteration(p) <= done}
        rows = [r for r in read_selection(out / SELECTION_FILE) if r["iteration"] in kept]
        record_path = out / SELECTION_RECORD
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        if any(not r.get("task") for r in rows):  # scored before per-task rows: scored again, the same way as new ones
            rows, record = [], {}
        settings = selection_settings(config)
        if rows and record:
            _check_same_selection(settings, record.get("settings", {}), record_path)
            record["settings"] = settings  # the same on every setting there is now (older records may list more)
        elif not record:  # rows without their record: how they were scored is unknown, so they are scored again
            rows = []
        if not config.controller.selection_seeds:
            return None
        if record.get("settings") != settings:  # nothing scored under other settings survives: start afresh
            record = {"settings": settings}
        return cls(config, out, rows, record, log)

    def picked_name(self) -> str:
        return self.record.get("pick", {}).get("checkpoint", "none yet")

    def score_pending(self, upto: int) -> Path:
        """Score every kept checkpoint up to iteration ``upto`` not yet scored; export the pick."""
        scored = {r["iteration"] for r in self.rows}
        pending = [p for p in kept_checkpoints(self.out)
                   if checkpoint_iteration(p) <= upto and checkpoint_iteration(p) not in scored]
        cosine = self._cosine() if pending else None
        for ckpt in pending:
            self.rows = marked(self.rows + self._score(ckpt, cosine))
            write_selection(self.rows, self.out / SELECTION_FILE)
            self.log(checkpoint_line([r for r in self.rows if r["iteration"] == checkpoint_iteration(ckpt)],
                                     pick(self.rows)))
        return self._export() if self.rows else self.out / EXPORT_FILE

    # -- the tuned cosine: once per output directory and task ----------------------------
    def _task_data(self, label: str):
        from lrservice.child.trainer import load_task_data

        if label not in self._data:
            self._data[label] = load_task_data(self.tasks[label])
        return self._data[label]

    def _cosine(self) -> dict[str, list]:
        """Each task's tuned cosine runs on the selection seeds (from ``selection.json`` once computed)."""
        from lrservice.control.evaluate import Run

        cached = self.record.setdefault("cosine", {})
        for label in self.tasks:
            if label not in cached:
                cached[label] = self._tune_cosine(label)
                write_json(self.out / SELECTION_RECORD, self.record)
        return {label: [Run(**{**r, "lrs": tuple(r["lrs"])}) for r in cached[label]["runs"]] for label in self.tasks}

    def _tune_cosine(self, label: str) -> dict:
        from lrservice.control.evaluate import run_baselines, tune_rivals
        from lrservice.control.rivals import rivals

        task, ev, t0 = self.tasks[label], self.config.evaluate, time.perf_counter()
        self.log(f"[lrservice] selection: tuning cosine for {label} on {list(ev.cosine_grid)} over tune seeds "
                 f"{list(ev.tune_seeds)}, then on the {len(self.seeds)} selection seeds {_seed_text(self.seeds)}")
        cosine_rival = [r for r in rivals(dataclasses.replace(self.config, task=task)) if r.name == "cosine"]
        tuned, _ = tune_rivals(task, self._task_data(label), cosine_rival, ev.tune_seeds, log=self.log)
        lr = float(tuned["cosine"]["lr"])
        runs = run_baselines(task, self._task_data(label), [("cosine", lr, s) for s in self.seeds])
        tuning = len(ev.cosine_grid) * len(ev.tune_seeds) * task.steps
        cosine = {"lr": lr, "runs": [dataclasses.asdict(r) for r in runs],
                  "val_loss_mean": float(np.mean([r.val_loss for r in runs])),
                  "test_accuracy_mean": float(np.mean([r.test_accuracy for r in runs])),
                  "tuning_child_steps": tuning, "child_steps": tuning + len(runs) * task.steps,
                  "wall_s": time.perf_counter() - t0}
        self.log(f"[lrservice] selection: {label}: tuned cosine lr {lr:g}; on the selection seeds final val loss "
                 f"{cosine['val_loss_mean']:.4f}, test acc {cosine['test_accuracy_mean']:.4f} "
                 f"({cosine['child_steps']:,} child steps, {cosine['wall_s']:.0f} s)")
        return cosine

    # -- one checkpoint ------------------------------------------------------------------
    def _score(self, ckpt: Path, cosine: dict[str, list]) -> list[dict]:
        """The checkpoint's deterministic policy from every initial LR on the selection seeds vs tuned cosine,
        on every task."""
        from lrservice.control.checkpoint import export_payload
        from lrservice.control.controller import LearnedController
        from lrservice.control.evaluate import compare_rows, run_controller

        t0, meta = time.perf_counter(), read_metadata(ckpt)
        controller = LearnedController(export_payload(ckpt), ckpt)
        rows = []
        for label, task in self.tasks.items():
            runs = run_controller(controller, task, self._task_data(label),
                                  [(float(lr), int(s)) for lr in self.starts for s in self.seeds], ckpt.name)
            for summary in compare_rows(runs, {"cosine": cosine[label]}):
                mine = [r for r in runs if r.initial_lr == summary["initial_lr"]]
                summary = {k: v for k, v in summary.items() if k in SELECTION_COLUMNS}
                rows.append({**summary, "iteration": checkpoint_iteration(ckpt), "checkpoint": ckpt.name,
                             "episodes": float(meta.get("episodes") or 0.0),
                             "training_child_steps": float(meta.get("child_steps") or 0.0),
                             "task": label, "cosine_val_loss": self.record["cosine"][label]["val_loss_mean"],
                             "train_seed": int(self.config.task.seed),
                             "test_loss_mean": float(np.mean([r.test_loss for r in mine])),
                             "selection_child_steps": float(len(mine) * task.steps)})
        wall = time.perf_counter() - t0
        return [{**r, "wall_s": wall} for r in rows]

    # -- the pick ------------------------------------------------------------------------
    def _export(self) -> Path:
        """``controller.pt``: the pick exported with what selecting it cost; also recorded in ``selection.json``."""
        chosen = pick(self.rows)
        newest = max(self.rows, key=lambda r: r["iteration"])
        cosine = self.record["cosine"]
        paid = [label for label in self.tasks if REUSED_FROM not in cosine[label]]  # a handed-over cosine cost 0 here
        tuning = float(sum(cosine[label]["child_steps"] for label in paid))
        scoring = float(sum(r["selection_child_steps"] for r in self.rows))
        first = next(r for r in self.rows if r["iteration"] == chosen)
        summary = {
            "iteration": chosen, "checkpoint": first["checkpoint"], "score": scores(self.rows)[chosen],
            "seeds": self.seeds, "initial_lrs": self.starts, "tasks": list(self.tasks),
            "cosine_lr": {label: cosine[label]["lr"] for label in self.tasks},
            "cosine_val_loss": {label: cosine[label]["val_loss_mean"] for label in self.tasks},
            "scored_iterations": sorted(scores(self.rows)),
            "child_steps": tuning + scoring, "tuning_child_steps": tuning,
            "scoring_child_steps": scoring, "run_child_steps": newest["training_child_steps"],
            "run_episodes": newest["episodes"],
            "wall_s": sum(cosine[label]["wall_s"] for label in paid)
            + sum({r["iteration"]: r["wall_s"] for r in self.rows}.values())}
        self.record["pick"] = summary
        write_json(self.out / SELECTION_RECORD, self.record)
        path = export_controller(self.out / CHECKPOINTS / first["checkpoint"], self.out / EXPORT_FILE,
                                 selection=summary)
        share = summary["child_steps"] / summary["run_child_steps"] if summary["run_child_steps"] else math.nan
        handed = sorted({cosine[label][REUSED_FROM] for label in self.tasks if label not in paid})
        reused = f", reused from the run of training seed {', '.join(map(str, handed))}" if handed else ""
        on = f"{len(self.tasks)} tasks x " if len(self.tasks) > 1 else ""
        self.log(f"[lrservice] selection: pick iter {chosen} (score {summary['score']:+.2%}: mean Δ final val loss vs "
                 f"tuned cosine, relative to cosine's, on {on}{len(self.seeds)} selection seeds x {len(self.starts)} "
                 f"initial LRs) -> {path}; newest iter {newest['iteration']} -> {self.out / LAST_FILE}; selection cost "
                 f"{summary['child_steps']:,.0f} child steps (cosine {tuning:,.0f}{reused} + scoring "
                 f"{scoring:,.0f}) = {share:.1%} of training's {summary['run_child_steps']:,.0f}")
        return path


def selection_settings(config: RunConfig) -> dict:
    """What scores are comparable under: seeds, starts, cosine's tuning and the tasks (not where data lives,
    nor the training seed: runs of one recipe from several seeds are scored alike, :mod:`lrservice.control.runs`)."""
    sections = config.to_dict()
    task = _scored_task(sections["task"])
    tasks = [_scored_task(t) for t in sections["controller"].get("tasks") or ()]
    ev = config.evaluate
    return {"controller.selection_seeds": list(config.controller.selection_seeds),
            "controller.initial_lrs": list(config.controller.start_lrs),
            "evaluate.cosine_grid": list(ev.cosine_grid), "evaluate.tune_seeds": list(ev.tune_seeds),
            **{f"task.{k}": v for k, v in task.items()}, "controller.tasks": tasks}


def _scored_task(task: Mapping[str, Any]) -> dict:
    """A task section as selection scores under: without where data lives or the training seed."""
    return {k: v for k, v in task.items() if k not in ("data_dir", "download", "plugin_dirs", "seed")}


def _check_same_selection(settings: Mapping[str, Any], recorded: Mapping[str, Any], where: Path) -> None:
    """Scored checkpoints are kept on resume: new ones must be scored the same way to be compared. A record
    written when the settings still named the training seed (``task.seed``, a ``seed`` in each of
    ``controller.tasks``) is compared without it."""
    if isinstance(recorded.get("controller.tasks"), list):
        recorded = {**recorded, "controller.tasks": [_scored_task(t) for t in recorded["controller.tasks"]]}
    for name, value in settings.items():
        if recorded.get(name) != value:
            raise ConfigError(f"{name}: {value!r} differs from the selection recorded in {where} "
                              f"({recorded.get(name)!r}); checkpoints scored there are not rescored: use the same "
                              "value, or another output directory")


def _seed_text(seeds: list[int]) -> str:
    contiguous = len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    return f"{seeds[0]}-{seeds[-1]}" if contiguous else str(seeds)


def _check_same_sections(config: RunConfig, meta: Mapping[str, Any], checkpoint: Path) -> None:
    """Resuming with another task or env semantics would mix two problems in one policy."""
    stored = stored_sections({"task": meta["task"], "controller": meta["controller"]})
    env_fields = (*ACTION_FIELDS, "reward", "baseline", "twin_policy", "tasks", "hidden")
    for name in env_fields:
        if getattr(stored.controller, name) != getattr(config.controller, name):
            raise ConfigError(f"controller.{name}: {getattr(config.controller, name)!r} differs from the "
                              f"checkpoint being resumed ({checkpoint}: {getattr(stored.controller, name)!r}); "
                              "use the same value or another output directory")
