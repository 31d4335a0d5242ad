"""The comparison as Tune experiments: tune grids, evaluate winners on held-out seeds, PBT.

Work happens in a stable run dir, ``compare.output_dir/compare.name``::

    config.json              the run's config and run_id
    controller/              the auto-trained controller (when an arm asks for one)
    tune/ eval/ eval-<pbt arm>/   Tune experiment dirs (a trial is a batch of children; a PBT
                                  member carries every held-out seed)
    parts/<experiment>.{steps,trials}.parquet   one pair per finished experiment
    parts/<experiment>.reports.jsonl             every result as the driver received it
    parts/<population>.exploits.parquet          PBT: exploit log
    steps.parquet trials.parquet pbt_exploits.parquet   all parts combined, deduplicated
    report.md report.html *.png                 see :mod:`lrservice.compare.report`

Each experiment is a :class:`lrservice.stage.Stage`: one whose parts exist is complete and
is skipped on ``--resume``; an interrupted one is restored from Tune's last state snapshot,
or started again when it saved none.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from ray import tune

from lrservice import stage
from lrservice.compare.arms import check_compare, eval_specs, pick_winners, resolve_params, tune_specs
from lrservice.compare.cost import add_costs, controller_cost
from lrservice.compare.population import exploit_parts, read_reports, recorder, reports_path, run_population
from lrservice.compare.report import build_report
from lrservice.compare.results import (
    EXPLOITS_FILE,
    EXPLOITS_SCHEMA,
    STEPS_FILE,
    STEPS_SCHEMA,
    TRIALS_FILE,
    TRIALS_SCHEMA,
    arm_summary,
    baseline_arms,
    combine,
    format_summary,
    read_table,
    rows_from_reports,
    to_table,
)
from lrservice.compare.tensorboard import DIRNAME, write_tensorboard
from lrservice.compare.trainable import (
    child_id,
    child_reports,
    child_share,
    child_spec,
    spec_from_config,
    trial_trainable,
)
from lrservice.config import ConfigError, RunConfig
from lrservice.control.checkpoint import resolve_checkpoint
from lrservice.control.training import train_controller
from lrservice.files import write_parquet, write_text
from lrservice.kinds import get_kind
from lrservice.runtime import connect

Log = Callable[[str], None]
CONTROLLER_DONE = "CHECKPOINT_PATH"


def run_dir_for(config: RunConfig) -> Path:
    """Where a comparison's files live: ``compare.output_dir/compare.name``, absolute."""
    return (Path(os.path.expanduser(config.compare.output_dir)) / config.compare.name).resolve()


def prepare_run_dir(config: RunConfig, resume: bool, overwrite: bool, log: Log) -> tuple[Path, str]:
    """Create (or, on resume, check) the run dir; returns it and the run id."""
    run_dir = run_dir_for(config)
    return run_dir, stage.prepare_run_dir(run_dir, config, "compare", resume, overwrite, log)


def ensure_controllers(config: RunConfig, run_dir: Path, resume: bool, log: Log) -> RunConfig:
    """Replace ``checkpoint: auto`` in controller arms by a controller trained into ``run_dir/controller``.

    Trained once per run (all auto arms share it); a finished training is recorded in
    ``controller/CHECKPOINT_PATH`` and reused on resume. Explicit checkpoints (``pretrained:NAME``,
    an exported ``controller.pt``, a checkpoint or output directory) must exist.
    """
    arms, trained = [], None
    for i, arm in enumerate(config.compare.arms):
        if not get_kind(arm.kind).learned:
            arms.append(arm)
            continue
        path = str(resolve_params(arm, arm.params, config)["checkpoint"])
        if path == "auto":
            if trained is None:
                trained = _train_controller(config, run_dir, resume, log)
            path = str(trained)
        else:
            try:
                path = str(resolve_checkpoint(path))
            except FileNotFoundError as exc:
                raise ConfigError(f"compare.arms[{i}].params.checkpoint: {exc}; or give 'auto'") from None
        arms.append(dataclasses.replace(arm, params={**arm.params, "checkpoint": path}))
    return dataclasses.replace(config, compare=dataclasses.replace(config.compare, arms=tuple(arms)))


def _train_controller(config: RunConfig, run_dir: Path, resume: bool, log: Log) -> Path:
    out = run_dir / "controller"
    done = out / CONTROLLER_DONE
    if done.exists():
        path = Path(done.read_text().strip())
        log(f"[lrservice] controller: reusing the one trained for this run at {path}")
        return path
    log(f"[lrservice] controller: no checkpoint given (auto); training one for "
        f"{config.controller.iterations} PPO iterations into {out}")
    started = time.perf_counter()
    path = Path(train_controller(config, out, iterations=config.controller.iterations, resume=resume, log=log))
    write_text(done, str(path))
    log(f"[lrservice] controller: trained in {time.perf_counter() - started:.0f} s -> {path}")
    return path


# -- Tune experiments ----------------------------------------------------------------------
def _short(spec: Mapping[str, Any]) -> str:
    return f"{spec['arm']}_{spec['phase']}_{len(spec['children'])}ch"


def _label(trial_config: Mapping[str, Any]) -> str:
    return _short(spec_from_config(trial_config))


def _outcome(trial) -> str:
    r = trial.last_result or {}
    return (f"done: {trial.trial_id} {_label(trial.config)} "
            f"mean val loss {r.get('val_loss', float('nan')):.4f} over {len(trial.config['spec']['children'])} "
            f"children, {r.get('time_total_s', 0):.1f} s")


def experiment_stage(name: str, run_dir: Path, param_space: dict, trainable, config: RunConfig,
                     scheduler=None, num_samples: int = 1) -> stage.Stage:
    """One comparison experiment as a :class:`~lrservice.stage.Stage` writing ``steps`` and ``trials`` parts."""
    compare = config.compare
    return stage.Stage(
        name=name, run_dir=run_dir, trainable=trainable, param_space=param_space, label=_label, outcome=_outcome,
        parts=("steps", "trials"), total=num_samples * stage.grid_size(param_space),
        max_failures=compare.max_failures, scheduler=scheduler, num_samples=num_samples,
        max_concurrent_trials=(compare.max_concurrent_trials or None) if scheduler is None else None)


def _collect(name: str, grid, recorded: Mapping[str, list[dict]], log: Log) -> tuple[list[dict], list[dict]]:
    """Step and summary rows of every child of every trial, from the trial's ``result.json`` and from
    what the driver recorded as results arrived (all reports, restarts included; later reports of a
    step win).

    Tune may rewrite a retried trial's ``result.json`` without its earlier reports; the
    recorder's copy keeps them, so every step reaches Parquet whatever Tune did."""
    steps, trials, unfinished = [], [], []
    from_files = {str(r[0]["trial_id"]): (path, r) for path, r in stage.trial_reports(grid) if r}
    for trial_id in dict.fromkeys([*from_files, *recorded]):
        path, reports = from_files.get(trial_id, (None, []))
        reports = [*reports, *recorded.get(trial_id, [])]
        if not reports:
            continue
        spec = spec_from_config(reports[-1]["config"])
        share = child_share(reports, len(spec["children"]))
        for i, rows in sorted(child_reports(reports).items()):
            child_steps, summary = rows_from_reports(child_spec(spec, i), child_id(trial_id, i), rows, share)
            steps.extend(child_steps)
            if summary is None:
                unfinished.append(child_id(path.name if path else trial_id, i))
            else:
                trials.append(summary)
    if unfinished:
        log(f"[lrservice] {name}: {len(unfinished)} child run(s) did not finish and have no summary row: "
            f"{', '.join(unfinished)}")
    return steps, trials


def _part_paths(run_dir: Path, name: str) -> tuple[Path, Path]:
    return stage.part_path(run_dir, name, "steps"), stage.part_path(run_dir, name, "trials")


def run_experiment(name: str, run_dir: Path, param_space: dict, trainable, config: RunConfig,
                   resume: bool, log: Log, scheduler=None, num_samples: int = 1) -> list[dict]:
    """Run (or skip, when its parts exist) one Tune experiment; returns its summary rows."""
    reports = reports_path(run_dir, name)
    experiment = dataclasses.replace(experiment_stage(name, run_dir, param_space, trainable, config, scheduler,
                                                      num_samples),
                                     callbacks=(recorder(reports, with_config=True),))
    if experiment.complete:
        log(f"[lrservice] {name}: already complete ({experiment.part('trials').name}); skipping")
        return _records(read_table(experiment.part("trials"), TRIALS_SCHEMA))
    started = time.perf_counter()
    reports.parent.mkdir(parents=True, exist_ok=True)
    if not (resume and stage.restorable(experiment.path)) and reports.exists():
        reports.unlink()  # a fresh start: the old reports belong to a run that saved no state
    grid = stage.fit(experiment, resume, log)
    steps, trials = _collect(name, grid, read_reports(reports), log)
    for error in grid.errors:
        log(f"[lrservice] {name}: a trial failed after {config.compare.max_failures} retries: "
            f"{str(error).splitlines()[0][:200]}")
    stage.write_parts(experiment, [to_table(steps, STEPS_SCHEMA), to_table(trials, TRIALS_SCHEMA)])
    log(f"[lrservice] {name}: {len(trials)} child runs finished in {time.perf_counter() - started:.0f} s")
    return trials


def _records(df) -> list[dict]:
    rows = df.to_dict("records")
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                r[k] = None
    return rows


def _describe(specs: list[dict]) -> str:
    """``arm children, ...`` and the total: what the phase's trials hold."""
    total = sum(len(s["children"]) for s in specs)
    return f"{total} child runs: " + ", ".join(f"{s['arm']} {len(s['children'])}" for s in specs)


def _controller_costs(config: RunConfig, run_dir: Path) -> dict:
    """Training cost of each controller arm's controller: trained in this run, or pretrained."""
    costs = {}
    for arm in (a for a in config.compare.arms if get_kind(a.kind).learned):
        path = Path(arm.params["checkpoint"])
        trained_here = (run_dir / "controller") in (path, *path.parents)
        costs[arm.name] = controller_cost(path, trained_here, config.controller.action_every)
    return costs


def run_compare(config: RunConfig, resume: bool = False, overwrite: bool = False, log: Log = print,
                checked: bool = False) -> Path:
    """The whole comparison: controller (if auto), tune phase, eval phase, PBT, Parquet, report.

    Returns the run dir. Rerunning with ``resume=True`` continues where it stopped. ``checked``:
    the caller already ran :func:`check_compare` (the CLI does, before it imports Ray).
    """
    if not checked:
        check_compare(config)  # every check the config allows, before Ray starts
    wall = time.perf_counter()
    run_dir, run_id = prepare_run_dir(config, resume, overwrite, log)
    connect(config.resources, log=log)
    trainable, placement = trial_trainable(config.resources)
    log(f"[lrservice] placement: {placement.note}; each trial (a batch of children) asks for {placement.trial}")
    log(f"[lrservice] TensorBoard (one line per arm and seed, written at the end): "
        f"tensorboard --logdir {run_dir / DIRNAME}; "
        f"Tune's per-trial curves as they run: tensorboard --logdir {run_dir}")
    config = ensure_controllers(config, run_dir, resume, log)
    names = []

    specs = tune_specs(config, run_id)
    winners: dict[str, dict] = {}
    if specs:
        log(f"[lrservice] phase tune: {len(specs)} trials ({_describe(specs)}) "
            f"on tune seeds {list(config.compare.tune_seeds)}")
        rows = run_experiment("tune", run_dir, {"spec": tune.grid_search(specs)}, trainable, config, resume, log)
        names.append("tune")
        winners = {arm: json.loads(json.dumps(p)) for arm, p in pick_winners(
            {**r, "params": json.loads(r["params"])} for r in rows).items()}
        for arm in config.compare.arms:
            if arm.grid and get_kind(arm.kind).tunable:
                if arm.name not in winners:
                    raise RuntimeError(f"phase tune: no trial of arm {arm.name!r} finished; rerun with --resume")
                log(f"[lrservice] tune winner for {arm.name}: {json.dumps(winners[arm.name], sort_keys=True)}")

    specs = eval_specs(config, run_id, winners)
    if specs:
        log(f"[lrservice] phase eval: {len(specs)} trials ({_describe(specs)}) on seeds {list(config.compare.seeds)}")
        run_experiment("eval", run_dir, {"spec": tune.grid_search(specs)}, trainable, config, resume, log)
        names.append("eval")

    pbt_names = [run_population(arm, config, run_id, run_dir, resume, log)  # its members carry every held-out seed
                 for arm in config.compare.arms if get_kind(arm.kind).population]
    names += pbt_names

    parts = [_part_paths(run_dir, n) for n in names]
    steps_table = combine([s for s, _ in parts], STEPS_SCHEMA, "steps")
    write_parquet(steps_table, run_dir / STEPS_FILE)
    board = write_tensorboard(steps_table.to_pandas(), run_dir)
    if pbt_names:
        write_parquet(combine(exploit_parts(run_dir, pbt_names), EXPLOITS_SCHEMA, "exploits"), run_dir / EXPLOITS_FILE)
    trials_df = add_costs(combine([t for _, t in parts], TRIALS_SCHEMA, "trials").to_pandas(),
                          _controller_costs(config, run_dir))
    write_parquet(to_table(trials_df, TRIALS_SCHEMA), run_dir / TRIALS_FILE)
    log(f"[lrservice] wrote {run_dir / STEPS_FILE} and {run_dir / TRIALS_FILE}")
    log("[lrservice] summary (eval phase, mean ± std over seeds, ranked by final validation loss; "
        "paired test-loss difference vs the reference baseline named below; cost per result):")
    log(format_summary(arm_summary(trials_df, baselines=baseline_arms(config.to_dict()))))
    if config.compare.report:
        report = build_report(run_dir, log=log)
        log(f"[lrservice] report: {report}")
    log(f"[lrservice] compare finished in {time.perf_counter() - wall:.0f} s; "
        f"TensorBoard: tensorboard --logdir {board}")
    return run_dir
