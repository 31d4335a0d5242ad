"""The recommender as three Tune stages: search (ASHA), compose, verify; then rank against FIX.

1. **search**: ``recommend.num_samples`` zoo policies sampled by :mod:`.space` plus FIX at the
   base LR, one child run each on the task seed, under ASHA (``time_attr="step"``, metric
   ``recommend.metric``, ``max_t`` = budget): weak policies stop after a few evaluations,
   promising ones run to the budget.
2. **compose**: composites of the best searched policies (:func:`.space.compose_candidates`),
   run to the budget on the task seed.
3. **verify**: the ``top_k`` best of search and compose, plus FIX at the base LR, on every
   ``verify_seeds`` seed, and with their LR levels scaled by each ``lr_scales`` factor on the
   first verify seed; ranked by :mod:`.rank`.

Each stage writes ``parts/<stage>.{steps,runs}.parquet`` when it finishes; ``--resume``
skips finished stages and restores an interrupted one with ``Tuner.restore``. Inputs of
every stage are deterministic given the config and earlier stages' parts.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from lrservice.config import ConfigError, RunConfig
from lrservice.recommend import output, rank, space
from lrservice.recommend.metrics import cost

Log = Callable[[str], None]
CONFIG_FILE = "config.json"
REFERENCE = "FIX-base"
STAGES = ("search", "compose", "verify")


@dataclass(frozen=True)
class Recommendation:
    """What a run concluded: the ranked candidates, the winner, FIX and the verdict."""

    run_dir: Path
    ranked: list[dict]
    best: dict
    reference: dict
    speedup: float | None
    verdict: str
    snippet: str


def run_dir_for(config: RunConfig) -> Path:
    return (Path(os.path.expanduser(config.recommend.output_dir)) / config.recommend.name).resolve()


def _prepare(config: RunConfig, resume: bool, overwrite: bool, log: Log) -> Path:
    run_dir = run_dir_for(config)
    meta_path = run_dir / CONFIG_FILE
    if overwrite and run_dir.exists():
        log(f"[lrservice] --overwrite: removing {run_dir}")
        shutil.rmtree(run_dir)
    key = {"task": config.to_dict()["task"], "recommend": config.to_dict()["recommend"]}
    if meta_path.exists():
        if not resume:
            raise ConfigError(f"recommend.name: {config.recommend.name!r} already has results in {run_dir}; rerun with "
                              "--resume to continue it, --overwrite to start again, or choose another recommend.name")
        if json.loads(meta_path.read_text())["key"] != key:
            raise ConfigError(f"recommend.name: {run_dir} was started with a different task/recommend config; "
                              "--resume needs the same config (use another recommend.name or --overwrite)")
        log(f"[lrservice] resuming the recommendation in {run_dir}")
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    output.write_text_atomic(json.dumps({"key": key, "config": config.to_dict(),
                                         "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2), meta_path)
    log(f"[lrservice] recommendation run in {run_dir}")
    return run_dir


# -- runs ----------------------------------------------------------------------------------
def _run(candidate: str, policy, seed: int, budget: int, scale: float = 1.0) -> dict:
    return {"candidate": candidate, "label": space.describe(policy), "policy": policy.to_dict(),
            "seed": int(seed), "scale": float(scale), "budget": int(budget)}


def _read_reports(path: Path) -> list[dict]:
    if not path.exists():
        return []
    reports = []
    for line in path.read_text().splitlines():
        try:
            reports.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash
            continue
    return reports


def rows_from_reports(stage: str, run: Mapping, trial_id: str, reports: list[dict], target: float) -> tuple[list[dict], dict]:
    """Step rows and the run row of one child run, cost recomputed from its curve."""
    key = {"stage": stage, "candidate": run["candidate"], "seed": run["seed"], "scale": run["scale"], "trial_id": trial_id}
    steps = [{**key, **{k: r.get(k) for k in ("step", "val_loss", "val_accuracy", "train_loss", "lr", "seconds")}}
             for r in reports]
    curve = [r for r in reports if not r.get("diverged")]
    reached = cost([r["step"] for r in curve], [r["val_accuracy"] for r in curve], [r["seconds"] for r in curve], target)
    last = reports[-1] if reports else {}
    final = last if last.get("final") else {}
    row = {**key, "label": run["label"], "policy": json.dumps(run["policy"], sort_keys=True),
           "steps_run": last.get("step", 0), "completed": bool(final), "diverged": bool(last.get("diverged", False)),
           **reached,
           "best_val_accuracy": max((r["val_accuracy"] for r in curve), default=None),
           "last_val_accuracy": last.get("val_accuracy"), "seconds": last.get("seconds"),
           **{k: final.get(k) for k in ("final_val_accuracy", "final_val_loss", "test_accuracy", "test_loss",
                                        "train_eval_loss", "loss_gap", "test_top5", "test_conf_mean_correct",
                                        "test_conf_std_correct", "test_class_conf_spread")}}
    if row["diverged"]:
        row["final_val_accuracy"] = 0.0  # a diverged child ends at chance or worse: rank it last
    return steps, row


def _progress(stage: str, total: int, log: Log):
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self):
            self.done = 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            r = trial.last_result or {}
            run = trial.config["run"]
            how = ("diverged" if r.get("diverged") else "finished" if r.get("final")
                   else f"stopped by ASHA at step {r.get('step')}")
            log(f"[lrservice] {stage}: {self.done}/{total} {run['candidate']} seed {run['seed']} x{run['scale']:g} "
                f"{how}, val acc {r.get('val_accuracy', float('nan')):.4f}")

        def on_trial_error(self, iteration, trials, trial, **info):
            log(f"[lrservice] {stage}: trial {trial.trial_id} ({trial.config['run']['candidate']}) failed; see {trial.local_path}")

    return Progress()


def run_stage(stage: str, runs: list[dict], run_dir: Path, trainable, config: RunConfig, resume: bool,
              log: Log, scheduler=None) -> list[dict]:
    """Run (or skip, when its parts exist) one Tune experiment over ``runs``; returns its run rows."""
    from ray import tune

    steps_path, runs_path = run_dir / "parts" / f"{stage}.steps.parquet", run_dir / "parts" / f"{stage}.runs.parquet"
    if steps_path.exists() and runs_path.exists():
        log(f"[lrservice] {stage}: already complete ({runs_path.name}); skipping")
        return output.read_rows(runs_path)
    started = time.perf_counter()
    path = run_dir / stage
    if resume and path.exists() and tune.Tuner.can_restore(str(path)):
        log(f"[lrservice] {stage}: restoring the interrupted experiment from {path}")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    else:
        if path.exists():
            shutil.rmtree(path)
        name = lambda t: f"{t.config['run']['candidate']}_s{t.config['run']['seed']}_x{t.config['run']['scale']:g}_{t.trial_id}"
        tuner = tune.Tuner(
            trainable,
            param_space={"run": tune.grid_search(runs)},
            tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=True,
                                        max_concurrent_trials=config.recommend.max_concurrent_trials or None,
                                        trial_name_creator=name, trial_dirname_creator=name),
            run_config=tune.RunConfig(name=stage, storage_path=str(run_dir), failure_config=tune.FailureConfig(max_failures=1),
                                      callbacks=[_progress(stage, len(runs), log)],
                                      verbose=int(os.environ.get("LRSERVICE_TUNE_VERBOSE", "0"))),
        )
    grid = tuner.fit()
    step_rows, run_rows = [], []
    for result in grid:
        reports = _read_reports(Path(result.path) / "result.json")
        if not reports:
            log(f"[lrservice] {stage}: a trial in {result.path} reported nothing (failed); left out")
            continue
        steps, row = rows_from_reports(stage, reports[0]["config"]["run"], str(reports[0]["trial_id"]), reports,
                                       config.recommend.target_accuracy)
        step_rows.extend(steps)
        run_rows.append(row)
    output.write_atomic(output.to_table(step_rows, output.STEPS_SCHEMA), steps_path)
    output.write_atomic(output.to_table(run_rows, output.RUNS_SCHEMA), runs_path)  # runs last: marks the stage complete
    log(f"[lrservice] {stage}: {len(run_rows)} runs in {time.perf_counter() - started:.0f} s")
    return output.read_rows(runs_path)


# -- the whole recommendation --------------------------------------------------------------
def _policy(row: Mapping):
    from lrservice.schedules import policy_from_dict

    return policy_from_dict(json.loads(row["policy"]))


def _trainable(config: RunConfig, log: Log):
    from ray import tune

    from lrservice.recommend.trial import tune_trial
    from lrservice.runtime import plan_placement

    placement = plan_placement(config.resources)
    log(f"[lrservice] placement: {placement.note}; each trial asks for {placement.trial}")
    return tune.with_resources(tune.with_parameters(tune_trial, task=config.task), placement.trial)


def run_recommend(config: RunConfig, resume: bool = False, overwrite: bool = False, log: Log = print) -> Recommendation:
    """Search, compose, verify and rank; write Parquet, ``recommended.yaml`` and ``report.md``."""
    from ray.tune.schedulers import ASHAScheduler

    from lrservice.runtime import connect

    rec, task = config.recommend, config.task
    wall = time.perf_counter()
    lr = space.LrRange(*rec.lr_range(task.optimizer))
    run_dir = _prepare(config, resume, overwrite, log)
    connect(config.resources, log=log)
    trainable = _trainable(config, log)
    log(f"[lrservice] target val accuracy {rec.target_accuracy:g} within {rec.budget} steps; "
        f"LRs in [{lr.lo:g}, {lr.hi:g}], reference FIX k0={lr.base:g}")

    searched = space.search_policies(rec.num_samples, rec.budget, lr, task.seed)
    runs = [_run(f"s{i:02d}-{p.name}", p, task.seed, rec.budget) for i, p in enumerate(searched)]
    runs.append(_run(REFERENCE, space.fix_reference(lr), task.seed, rec.budget))
    grace = min(rec.budget, task.eval_every * max(1, math.ceil(rec.grace_fraction * rec.budget / task.eval_every)))
    asha = ASHAScheduler(time_attr="step", metric=rec.metric, mode="max" if rec.metric == "val_accuracy" else "min",
                         max_t=rec.budget, grace_period=grace, reduction_factor=rec.reduction_factor)
    log(f"[lrservice] stage search: {len(runs)} runs ({rec.num_samples} sampled zoo policies + FIX) under ASHA "
        f"(grace {grace} steps, reduction factor {rec.reduction_factor})")
    search_rows = sorted(run_stage("search", runs, run_dir, trainable, config, resume, log, asha), key=rank.search_key)

    ranked_policies = [_policy(r) for r in search_rows]
    composites = space.compose_candidates(ranked_policies, rec.budget, rec.compose_fractions, rec.num_composites)
    compose_rows = []
    if composites:
        runs = [_run(f"c{i:02d}-compose", c, task.seed, rec.budget) for i, c in enumerate(composites)]
        log(f"[lrservice] stage compose: {len(runs)} composites of the best searched policies")
        compose_rows = run_stage("compose", runs, run_dir, trainable, config, resume, log)

    pool = sorted([r for r in search_rows + compose_rows if r["candidate"] != REFERENCE], key=rank.search_key)
    chosen = pool[:rec.top_k]
    seeds = list(rec.verify_seeds)
    runs = []
    reference_policy = space.fix_reference(lr)
    for name, policy in [(r["candidate"], _policy(r)) for r in chosen] + [(REFERENCE, reference_policy)]:
        runs += [_run(name, policy, s, rec.budget) for s in seeds]
        runs += [_run(name, space.scale_policy(policy, f), seeds[0], rec.budget, f) for f in rec.lr_scales]
    log(f"[lrservice] stage verify: top {len(chosen)} + FIX on seeds {seeds}, LR scales {list(rec.lr_scales)} "
        f"on seed {seeds[0]}: {len(runs)} runs")
    verify_rows = run_stage("verify", runs, run_dir, trainable, config, resume, log)

    by_candidate: dict[str, list[dict]] = {}
    for row in verify_rows:
        by_candidate.setdefault(row["candidate"], []).append(row)
    summaries = [rank.summarise(name, rows, seeds, rec.lr_scales) for name, rows in by_candidate.items()]
    ranked = rank.rank(summaries)
    reference = next((s for s in ranked if s["candidate"] == REFERENCE), None)
    if reference is None:
        raise RuntimeError(f"verify: the {REFERENCE} reference runs failed; see {run_dir / 'verify'} and rerun with --resume")
    for s in ranked:
        s["is_reference"] = s["candidate"] == REFERENCE
        s["speedup_vs_fix"] = rank.speedup(reference, s)
    best = ranked[0]
    verdict = rank.verdict(reference, best, rec.target_accuracy)
    result = Recommendation(run_dir, ranked, best, reference, best["speedup_vs_fix"], verdict, "")
    result = _write_outputs(result, config, run_dir, log)
    log(f"[lrservice] recommendation done in {time.perf_counter() - wall:.0f} s: {run_dir}")
    return result


def _write_outputs(result: Recommendation, config: RunConfig, run_dir: Path, log: Log) -> Recommendation:
    rec = config.recommend
    parts = run_dir / "parts"
    for kind, schema in (("steps", output.STEPS_SCHEMA), ("runs", output.RUNS_SCHEMA)):
        rows = [row for stage in STAGES if (parts / f"{stage}.{kind}.parquet").exists()
                for row in output.read_rows(parts / f"{stage}.{kind}.parquet")]
        output.write_atomic(output.to_table(rows, schema), run_dir / f"{kind}.parquet")
    output.write_atomic(output.to_table(result.ranked, output.candidates_schema(rec.lr_scales)), run_dir / "candidates.parquet")
    best = result.best
    comment = (f"lrservice recommend: {config.task.dataset}/{config.task.model}/{config.task.optimizer}, target val accuracy "
               f"{rec.target_accuracy:g} within {rec.budget} steps.\n{result.verdict}")
    snippet = output.policy_snippet(json.loads(best["policy"]), f"recommended-{best['candidate']}".replace(".", "-"), comment)
    output.write_text_atomic(snippet, run_dir / "recommended.yaml")
    table = output.format_table(result.ranked, rec.lr_scales)
    report = (f"# Recommendation: {config.task.dataset} / {config.task.model} ({config.task.optimizer})\n\n"
              f"Target validation accuracy {rec.target_accuracy:g} within {rec.budget} steps; verify seeds "
              f"{list(rec.verify_seeds)}; LR scales on seed {rec.verify_seeds[0]}.\n\n{table}\n\n**{result.verdict}**\n\n"
              f"```yaml\n{snippet}```\n")
    output.write_text_atomic(report, run_dir / "report.md")
    log("[lrservice] ranked candidates (verify stage):\n" + table)
    log(f"[lrservice] {result.verdict}")
    log(f"[lrservice] recommended policy ({run_dir / 'recommended.yaml'}):\n{snippet}")
    return Recommendation(result.run_dir, result.ranked, result.best, result.reference, result.speedup,
                          result.verdict, snippet)
