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

Each stage is a :class:`lrservice.stage.Stage` and writes ``parts/<stage>.{steps,runs}.parquet``
when it finishes; ``--resume`` skips finished stages and restores an interrupted one from
Tune's last state snapshot, or starts it again when it saved none. Inputs of every stage
are deterministic given the config and earlier stages' parts.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from lrservice import stage
from lrservice.config import RunConfig
from lrservice.files import write_parquet, write_text
from lrservice.recommend import output, rank, space
from lrservice.recommend.metrics import cost
from lrservice.recommend.trial import tune_trial
from lrservice.runtime import connect, plan_placement
from lrservice.schedules import policy_from_dict

Log = Callable[[str], None]
REFERENCE = "FIX-base"
STAGES = ("search", "compose", "verify")
STEP_METRICS = ("step", "val_loss", "val_accuracy", "train_loss", "lr", "elapsed_s")
FINAL_METRICS = ("test_loss", "test_accuracy", "top5_accuracy", "conf_mean_correct", "conf_std_correct",
                 "class_conf_spread", "train_eval_loss", "train_test_loss_gap")  # ScheduledChildren.final's


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
    """Where a recommendation's files live: ``recommend.output_dir/recommend.name``, absolute."""
    return (Path(os.path.expanduser(config.recommend.output_dir)) / config.recommend.name).resolve()


# -- runs ----------------------------------------------------------------------------------
def _run(candidate: str, policy, seed: int, budget: int, scale: float = 1.0) -> dict:
    return {"candidate": candidate, "label": space.describe(policy), "policy": policy.to_dict(),
            "seed": int(seed), "scale": float(scale), "budget": int(budget)}


def rows_from_reports(stage: str, run: Mapping, trial_id: str, reports: list[dict],
                      target: float) -> tuple[list[dict], dict]:
    """Step rows and the run row of one child run, cost recomputed from its curve.

    Cost is :func:`.metrics.cost` over every report, as the runner computes it, so a run ASHA
    stopped has one too. A run's final metrics are its final report's under compare's names:
    ``final_val_loss`` / ``final_val_accuracy`` are that report's ``val_loss`` / ``val_accuracy``.
    """
    key = {"stage": stage, "candidate": run["candidate"], "seed": run["seed"], "scale": run["scale"],
           "trial_id": trial_id}
    steps = [{**key, **{k: r.get(k) for k in STEP_METRICS}} for r in reports]
    reached = cost([r["step"] for r in reports], [r["val_accuracy"] for r in reports],
                   [r["elapsed_s"] for r in reports], target)
    curve = [r for r in reports if not r.get("diverged")]
    last = reports[-1] if reports else {}
    final = last if last.get("final") else {}
    diverged = bool(last.get("diverged", False))
    row = {**key, "label": run["label"], "policy": json.dumps(run["policy"], sort_keys=True),
           "steps_done": last.get("step", 0), "completed": bool(final) and not diverged, "diverged": diverged,
           **reached, "target_accuracy": float(target),
           "best_val_accuracy": max((r["val_accuracy"] for r in curve), default=None),
           "last_val_accuracy": last.get("val_accuracy"), "elapsed_s": last.get("elapsed_s"),
           "final_val_loss": final.get("val_loss"), "final_val_accuracy": final.get("val_accuracy"),
           **{k: final.get(k) for k in FINAL_METRICS}}
    if diverged:
        row["final_val_accuracy"] = 0.0  # a diverged child ends at chance or worse: rank it last
    return steps, row


def _label(trial_config: Mapping) -> str:
    run = trial_config["run"]
    return f"{run['candidate']}_s{run['seed']}_x{run['scale']:g}"


def _outcome(trial) -> str:
    r = trial.last_result or {}
    run = trial.config["run"]
    how = ("diverged" if r.get("diverged") else "finished" if r.get("final")
           else f"stopped by ASHA at step {r.get('step')}")
    return (f"{run['candidate']} seed {run['seed']} x{run['scale']:g} {how}, "
            f"val acc {r.get('val_accuracy', float('nan')):.4f}")


def run_stage(name: str, runs: list[dict], run_dir: Path, trainable, config: RunConfig, resume: bool,
              log: Log, scheduler=None) -> list[dict]:
    """Run (or skip, when its parts exist) one Tune experiment over ``runs``; returns its run rows."""
    current = stage.Stage(
        name=name, run_dir=run_dir, trainable=trainable, param_space={"run": tune.grid_search(runs)},
        label=_label, outcome=_outcome, parts=("steps", "runs"), total=len(runs), max_failures=1,
        scheduler=scheduler, max_concurrent_trials=config.recommend.max_concurrent_trials or None)
    if current.complete:
        log(f"[lrservice] {name}: already complete ({current.part('runs').name}); skipping")
        return output.read_rows(current.part("runs"))
    started = time.perf_counter()
    grid = stage.fit(current, resume, log)
    step_rows, run_rows = [], []
    for path, reports in stage.trial_reports(grid):
        if not reports:
            log(f"[lrservice] {name}: a trial in {path} reported nothing (failed); left out")
            continue
        steps, row = rows_from_reports(name, reports[0]["config"]["run"], str(reports[0]["trial_id"]), reports,
                                       config.recommend.target_accuracy)
        step_rows.extend(steps)
        run_rows.append(row)
    stage.write_parts(current, [output.to_table(step_rows, output.STEPS_SCHEMA),
                                output.to_table(run_rows, output.RUNS_SCHEMA)])  # runs last: marks the stage complete
    log(f"[lrservice] {name}: {len(run_rows)} runs in {time.perf_counter() - started:.0f} s")
    return output.read_rows(current.part("runs"))


# -- the whole recommendation --------------------------------------------------------------
def _policy(row: Mapping):
    return policy_from_dict(json.loads(row["policy"]))


def _trainable(config: RunConfig, log: Log):
    placement = plan_placement(config.resources)
    log(f"[lrservice] placement: {placement.note}; each trial asks for {placement.trial}")
    trainable = tune.with_parameters(tune_trial, task=config.task, target=config.recommend.target_accuracy)
    return tune.with_resources(trainable, placement.trial)


def run_recommend(config: RunConfig, resume: bool = False, overwrite: bool = False, log: Log = print) -> Recommendation:
    """Search, compose, verify and rank; write Parquet, ``recommended.yaml`` and ``report.md``."""
    rec, task = config.recommend, config.task
    wall = time.perf_counter()
    lr = space.LrRange(*rec.lr_range(task.optimizer))
    run_dir = run_dir_for(config)
    stage.prepare_run_dir(run_dir, config, "recommend", resume, overwrite, log)
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
        raise RuntimeError(f"verify: the {REFERENCE} reference runs failed; see {run_dir / 'verify'} "
                           "and rerun with --resume")
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
    for kind, schema in (("steps", output.STEPS_SCHEMA), ("runs", output.RUNS_SCHEMA)):
        parts = [stage.part_path(run_dir, name, kind) for name in STAGES]
        rows = [row for part in parts if part.exists() for row in output.read_rows(part)]
        write_parquet(output.to_table(rows, schema), run_dir / f"{kind}.parquet")
    write_parquet(output.to_table(result.ranked, output.candidates_schema(rec.lr_scales)),
                  run_dir / "candidates.parquet")
    best = result.best
    comment = (f"lrservice recommend: {config.task.dataset}/{config.task.model}/{config.task.optimizer}, "
               "target val accuracy "
               f"{rec.target_accuracy:g} within {rec.budget} steps.\n{result.verdict}")
    snippet = output.policy_snippet(json.loads(best["policy"]), f"recommended-{best['candidate']}".replace(".", "-"),
                                    comment)
    write_text(run_dir / "recommended.yaml", snippet)
    table = output.format_table(result.ranked, rec.lr_scales)
    report = (f"# Recommendation: {config.task.dataset} / {config.task.model} ({config.task.optimizer})\n\n"
              f"Target validation accuracy {rec.target_accuracy:g} within {rec.budget} steps; verify seeds "
              f"{list(rec.verify_seeds)}; LR scales on seed {rec.verify_seeds[0]}.\n\n{table}\n\n"
              f"**{result.verdict}**\n\n"
              f"```yaml\n{snippet}```\n")
    write_text(run_dir / "report.md", report)
    log("[lrservice] ranked candidates (verify stage):\n" + table)
    log(f"[lrservice] {result.verdict}")
    log(f"[lrservice] recommended policy ({run_dir / 'recommended.yaml'}):\n{snippet}")
    return Recommendation(result.run_dir, result.ranked, result.best, result.reference, result.speedup,
                          result.verdict, snippet)
