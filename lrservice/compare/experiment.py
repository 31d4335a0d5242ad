"""The comparison as Tune experiments: tune grids, evaluate winners on held-out seeds, PBT.

Work happens in a stable run dir, ``compare.output_dir/compare.name``::

    config.json              the run's config and run_id
    controller/              the auto-trained controller (when an arm asks for one)
    tune/ eval/ eval-<pbt arm>-s<seed>/   Tune experiment dirs (one PBT population per held-out seed)
    parts/<experiment>.{steps,trials}.parquet   one pair per finished experiment
    parts/<population>.{reports.jsonl,exploits.parquet}   PBT: every result as it arrived; exploit log
    steps.parquet trials.parquet pbt_exploits.parquet   all parts combined, deduplicated
    report.md report.html *.png                 see :mod:`lrservice.compare.report`

An experiment whose parts exist is complete and is skipped on ``--resume``; an
interrupted one is continued with ``Tuner.restore(..., resume_errored=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from lrservice.config import ConfigError, RunConfig

Log = Callable[[str], None]
CONFIG_FILE = "config.json"
PARTS = "parts"
CONTROLLER_DONE = "CHECKPOINT_PATH"


def run_dir_for(config: RunConfig) -> Path:
    """Where a comparison's files live: ``compare.output_dir/compare.name``, absolute."""
    return (Path(os.path.expanduser(config.compare.output_dir)) / config.compare.name).resolve()


def prepare_run_dir(config: RunConfig, resume: bool, overwrite: bool, log: Log) -> tuple[Path, str]:
    """Create (or, on resume, check) the run dir; returns it and the run id."""
    run_dir = run_dir_for(config)
    meta_path = run_dir / CONFIG_FILE
    if meta_path.exists() and overwrite:
        log(f"[lrservice] --overwrite: removing {run_dir}")
        shutil.rmtree(run_dir)
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if not resume:
            raise ConfigError(f"compare.name: {config.compare.name!r} already has results in {run_dir}; "
                              "rerun with --resume to continue it, --overwrite to start again, or choose another compare.name")
        if meta["config"]["task"] != config.to_dict()["task"] or meta["config"]["compare"] != config.to_dict()["compare"]:
            raise ConfigError(f"compare.name: {run_dir} was started with a different task/compare config; "
                              "--resume needs the same config (use another compare.name or --overwrite)")
        log(f"[lrservice] resuming run {meta['run_id']} in {run_dir}")
        return run_dir, meta["run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"{config.compare.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    _write_json(meta_path, {"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "config": config.to_dict()})
    log(f"[lrservice] run {run_id} in {run_dir}")
    return run_dir, run_id


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def ensure_controllers(config: RunConfig, run_dir: Path, resume: bool, log: Log) -> RunConfig:
    """Replace ``checkpoint: auto`` in controller arms by a controller trained into ``run_dir/controller``.

    Trained once per run (all auto arms share it); a finished training is recorded in
    ``controller/CHECKPOINT_PATH`` and reused on resume. Explicit paths must exist.
    """
    arms, trained = [], None
    for i, arm in enumerate(config.compare.arms):
        if arm.kind != "controller":
            arms.append(arm)
            continue
        path = str(arm.params.get("checkpoint", "auto"))
        if path == "auto":
            if trained is None:
                trained = _train_controller(config, run_dir, resume, log)
            path = str(trained)
        else:
            path = str(Path(os.path.expanduser(path)).resolve())
            if not Path(path).exists():
                raise ConfigError(f"compare.arms[{i}].params.checkpoint: {arm.params['checkpoint']!r} does not exist; "
                                  "give a directory written by `lrservice train-controller`, or 'auto'")
        arms.append(dataclasses.replace(arm, params={**arm.params, "checkpoint": path}))
    return dataclasses.replace(config, compare=dataclasses.replace(config.compare, arms=tuple(arms)))


def _train_controller(config: RunConfig, run_dir: Path, resume: bool, log: Log) -> Path:
    out = run_dir / "controller"
    done = out / CONTROLLER_DONE
    if done.exists():
        path = Path(done.read_text().strip())
        log(f"[lrservice] controller: reusing the one trained for this run at {path}")
        return path
    from lrservice.control.training import train_controller

    log(f"[lrservice] controller: no checkpoint given (auto); training one for "
        f"{config.controller.iterations} PPO iterations into {out}")
    started = time.perf_counter()
    path = Path(train_controller(config, out, iterations=config.controller.iterations, resume=resume, log=log))
    out.mkdir(parents=True, exist_ok=True)
    done.write_text(str(path))
    log(f"[lrservice] controller: trained in {time.perf_counter() - started:.0f} s -> {path}")
    return path


# -- Tune experiments ----------------------------------------------------------------------
def _short(spec: Mapping[str, Any]) -> str:
    return f"{spec['arm']}_s{spec['seed']}"


def _restorable(path: Path) -> bool:
    """Tune can continue ``path`` only once it has written an experiment-state snapshot;
    a driver killed before the first snapshot leaves ``tuner.pkl`` alone, which Tune would
    "restore" into a fresh experiment without its trial configs."""
    from ray import tune

    return (path.exists() and tune.Tuner.can_restore(str(path))
            and any(path.glob("experiment_state-*.json")))


def _tuner(name: str, run_dir: Path, param_space: dict, trainable, config: RunConfig, resume: bool,
           log: Log, scheduler=None, num_samples: int = 1, total: int = 0, callbacks: list | None = None):
    """A new Tuner, or the restored one when resuming an interrupted experiment."""
    from ray import tune

    path = run_dir / name
    if resume and _restorable(path):
        log(f"[lrservice] {name}: restoring the interrupted experiment from {path}")
        return tune.Tuner.restore(str(path), trainable=trainable, param_space=param_space, resume_errored=True)
    if path.exists():
        if resume:
            log(f"[lrservice] {name}: the interrupted experiment saved no state yet; starting it again")
        shutil.rmtree(path)  # started but never saved its state: nothing to restore
    compare = config.compare
    keep = None  # all: PBT breaks with num_to_keep (DESIGN.md), and pruning forces state snapshots; checkpoint_every bounds disk use
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            num_samples=num_samples,
            scheduler=scheduler,
            max_concurrent_trials=(compare.max_concurrent_trials or None) if scheduler is None else None,
            reuse_actors=True,
            trial_name_creator=lambda t: f"{_short(_spec_of(t.config))}_{t.trial_id}",
            trial_dirname_creator=lambda t: f"{_short(_spec_of(t.config))}_{t.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(run_dir),
            failure_config=tune.FailureConfig(max_failures=compare.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
            callbacks=[_progress(name, total), *(callbacks or [])],
            verbose=int(os.environ.get("LRSERVICE_TUNE_VERBOSE", "0")),  # Tune's tables: 1; our lines suffice
        ),
    )


def _progress(name: str, total: int):
    """A Tune callback printing one ``[lrservice]`` line per finished or failed trial."""
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self):
            self.done = 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            r = trial.last_result or {}
            print(f"[lrservice] {name}: {self.done}/{total} done: {trial.trial_id} {_short(_spec_of(trial.config))} "
                  f"val loss {r.get('val_loss', float('nan')):.4f}, test acc {r.get('test_accuracy', float('nan')):.4f}, "
                  f"{r.get('time_total_s', 0):.1f} s", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"[lrservice] {name}: trial {trial.trial_id} {_short(_spec_of(trial.config))} failed for good "
                  f"(after compare.max_failures retries); see {trial.local_path}", flush=True)

    return Progress()


def _spec_of(config: Mapping[str, Any]) -> dict:
    from lrservice.compare.trainable import spec_from_config

    return spec_from_config(config)


def _collect(name: str, run_dir: Path, results, log: Log) -> tuple[list[dict], list[dict]]:
    """Step and summary rows from every trial's ``result.json`` (all reports, restarts included)."""
    from lrservice.compare.results import rows_from_reports

    steps, trials, unfinished = [], [], []
    for result in results:
        reports = _read_reports(Path(result.path) / "result.json")
        if not reports:
            unfinished.append(Path(result.path).name)
            continue
        spec = _spec_of(reports[-1]["config"])
        spec["seed"] = _spec_of(reports[0]["config"])["seed"]  # PBT exploit copies the donor's config
        trial_steps, summary = rows_from_reports(spec, str(reports[0]["trial_id"]), reports,
                                                 reports[-1].get("time_total_s"))
        steps.extend(trial_steps)
        if summary is None:
            unfinished.append(Path(result.path).name)
        else:
            trials.append(summary)
    if unfinished:
        log(f"[lrservice] {name}: {len(unfinished)} trial(s) did not finish and have no summary row: {', '.join(unfinished)}")
    return steps, trials


def _read_reports(path: Path) -> list[dict]:
    if not path.exists():
        return []
    reports = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                reports.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash
                continue
    return reports


def _part_paths(run_dir: Path, name: str) -> tuple[Path, Path]:
    return run_dir / PARTS / f"{name}.steps.parquet", run_dir / PARTS / f"{name}.trials.parquet"


def run_experiment(name: str, run_dir: Path, param_space: dict, trainable, config: RunConfig,
                   resume: bool, log: Log, scheduler=None, num_samples: int = 1) -> list[dict]:
    """Run (or skip, when its parts exist) one Tune experiment; returns its summary rows."""
    from lrservice.compare.results import STEPS_SCHEMA, TRIALS_SCHEMA, read_table, to_table, write_atomic

    steps_path, trials_path = _part_paths(run_dir, name)
    if steps_path.exists() and trials_path.exists():
        log(f"[lrservice] {name}: already complete ({trials_path.name}); skipping")
        return _records(read_table(trials_path, TRIALS_SCHEMA))
    started = time.perf_counter()
    total = num_samples * _grid_size(param_space)
    tuner = _tuner(name, run_dir, param_space, trainable, config, resume, log, scheduler, num_samples, total)
    grid = tuner.fit()
    steps, trials = _collect(name, run_dir, grid, log)
    for error in grid.errors:
        log(f"[lrservice] {name}: a trial failed after {config.compare.max_failures} retries: {str(error).splitlines()[0][:200]}")
    write_atomic(to_table(steps, STEPS_SCHEMA), steps_path)  # steps first: trials marks the part complete
    write_atomic(to_table(trials, TRIALS_SCHEMA), trials_path)
    log(f"[lrservice] {name}: {len(trials)} trials finished in {time.perf_counter() - started:.0f} s")
    return trials


def _grid_size(space: Mapping[str, Any]) -> int:
    n = 1
    for value in space.values():
        if isinstance(value, dict) and "grid_search" in value:
            n *= len(value["grid_search"])
    return n


def _records(df) -> list[dict]:
    import math

    rows = df.to_dict("records")
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                r[k] = None
    return rows


def _describe(specs: list[dict]) -> str:
    counts: dict[str, int] = {}
    for s in specs:
        counts[s["arm"]] = counts.get(s["arm"], 0) + 1
    return ", ".join(f"{arm} {n}" for arm, n in counts.items())


def _controller_costs(config: RunConfig, run_dir: Path) -> dict:
    """Training cost of each controller arm's controller: trained in this run, or pretrained."""
    from lrservice.compare.cost import controller_cost

    costs = {}
    for arm in (a for a in config.compare.arms if a.kind == "controller"):
        path = Path(arm.params["checkpoint"])
        trained_here = (run_dir / "controller") in (path, *path.parents)
        costs[arm.name] = controller_cost(path, trained_here, config.controller.action_every)
    return costs


def run_compare(config: RunConfig, resume: bool = False, overwrite: bool = False, log: Log = print) -> Path:
    """The whole comparison: controller (if auto), tune phase, eval phase, PBT, Parquet, report.

    Returns the run dir. Rerunning with ``resume=True`` continues where it stopped.
    """
    from ray import tune

    from lrservice.compare.arms import eval_specs, pick_winners, trial_spec, tune_specs
    from lrservice.preflight import check_compare
    from lrservice.compare.cost import add_costs
    from lrservice.compare.population import exploit_parts, run_population
    from lrservice.compare.tensorboard import DIRNAME, write_tensorboard
    from lrservice.compare.results import (EXPLOITS_FILE, EXPLOITS_SCHEMA, STEPS_FILE, STEPS_SCHEMA, TRIALS_FILE,
                                           TRIALS_SCHEMA, arm_summary, baseline_arms, combine, format_summary,
                                           to_table, write_atomic)
    from lrservice.compare.trainable import trial_trainable
    from lrservice.runtime import connect

    check_compare(config)  # every check the config allows, before Ray starts
    wall = time.perf_counter()
    run_dir, run_id = prepare_run_dir(config, resume, overwrite, log)
    connect(config.resources, log=log)
    trainable, placement = trial_trainable(config.resources)
    log(f"[lrservice] placement: {placement.note}; each trial asks for {placement.trial}")
    log(f"[lrservice] TensorBoard (one line per arm and seed, written at the end): tensorboard --logdir {run_dir / DIRNAME}; "
        f"Tune's per-trial curves as they run: tensorboard --logdir {run_dir}")
    config = ensure_controllers(config, run_dir, resume, log)
    names = []

    specs = tune_specs(config, run_id)
    winners: dict[str, dict] = {}
    if specs:
        log(f"[lrservice] phase tune: {len(specs)} trials ({_describe(specs)}) on tune seeds {list(config.compare.tune_seeds)}")
        rows = run_experiment("tune", run_dir, {"spec": tune.grid_search(specs)}, trainable, config, resume, log)
        names.append("tune")
        winners = {arm: json.loads(json.dumps(p)) for arm, p in pick_winners(
            {**r, "params": json.loads(r["params"])} for r in rows).items()}
        for arm in config.compare.arms:
            if arm.grid and arm.kind != "pbt":
                if arm.name not in winners:
                    raise RuntimeError(f"phase tune: no trial of arm {arm.name!r} finished; rerun with --resume")
                log(f"[lrservice] tune winner for {arm.name}: {json.dumps(winners[arm.name], sort_keys=True)}")

    specs = eval_specs(config, run_id, winners)
    if specs:
        log(f"[lrservice] phase eval: {len(specs)} trials ({_describe(specs)}) on seeds {list(config.compare.seeds)}")
        run_experiment("eval", run_dir, {"spec": tune.grid_search(specs)}, trainable, config, resume, log)
        names.append("eval")

    pbt_names = []
    for arm in (a for a in config.compare.arms if a.kind == "pbt"):
        for seed in config.compare.seeds:  # one independent population per held-out seed
            pbt_names.append(run_population(arm, seed, config, run_id, run_dir, resume, log))
    names += pbt_names

    parts = [_part_paths(run_dir, n) for n in names]
    steps_table = combine([s for s, _ in parts], STEPS_SCHEMA, "steps")
    write_atomic(steps_table, run_dir / STEPS_FILE)
    board = write_tensorboard(steps_table.to_pandas(), run_dir)
    if pbt_names:
        write_atomic(combine(exploit_parts(run_dir, pbt_names), EXPLOITS_SCHEMA, "exploits"), run_dir / EXPLOITS_FILE)
    trials_df = add_costs(combine([t for _, t in parts], TRIALS_SCHEMA, "trials").to_pandas(),
                          _controller_costs(config, run_dir))
    write_atomic(to_table(trials_df, TRIALS_SCHEMA), run_dir / TRIALS_FILE)
    log(f"[lrservice] wrote {run_dir / STEPS_FILE} and {run_dir / TRIALS_FILE}")
    log("[lrservice] summary (eval phase, mean ± std over seeds, ranked by final validation loss; "
        "paired test-loss difference vs the best tuned baseline; cost per result):")
    log(format_summary(arm_summary(trials_df, baselines=baseline_arms(config.to_dict()))))
    if config.compare.report:
        from lrservice.compare.report import build_report

        report = build_report(run_dir, log=log)
        log(f"[lrservice] report: {report}")
    log(f"[lrservice] compare finished in {time.perf_counter() - wall:.0f} s; "
        f"TensorBoard: tensorboard --logdir {board}")
    return run_dir
