"""The evidence protocol for a learned controller (shared/DESIGN.md), run without Ray.

1. Tune each rival (constant, cosine and the modern family of ``evaluate.rivals``:
   warmup + cosine, WSD, OneCycle, linear decay, Schedule-Free AdamW, Prodigy) on its grid
   over the tune seeds; pick the point with the lowest mean final validation loss. The
   *best tuned rival* is the rival whose picked point scored lowest there — chosen on the
   tune seeds, never on the held-out ones.
2. On held-out seeds never used for tuning or training, run each tuned rival once and
   each controller from every initial LR; same seed = same initial weights and batch order.
3. Per arm and initial LR: the paired per-seed difference of final validation loss (and
   test accuracy) against tuned cosine, tuned constant and the best tuned rival, with 95%
   bootstrap CIs.

Rivals train through the one runner of scheduled children (:mod:`lrservice.runner`, as
compare's trials do): schedule rivals of a phase together in one child pool (batched when the
model allows) through their kind's step -> LR function, optimizer-level rivals as separate
children. Test metrics are reported, never used for selection.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from lrservice.child.data import ChildData
from lrservice.config import ControllerConfig, RunConfig, TaskConfig
from lrservice.control.controller import LearnedController
from lrservice.control.episodes import EpisodeBatch, PoolFactory
from lrservice.control.rivals import Rival
from lrservice.kinds import get_kind, grid_scores, tuned_winners
from lrservice.runner import ChildRun, run_children
from lrservice.stats import compare_paired

Log = Callable[[str], None]
REFERENCES = ("constant", "cosine", "best")  # every arm's paired differences: tuned constant, cosine, best tuned rival


@dataclass(frozen=True)
class Run:
    """One child run's outcome."""

    arm: str
    initial_lr: float
    seed: int
    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float
    diverged: bool
    lrs: tuple[float, ...]  # the LR in force every ``lr_every`` child steps from step 0
    lr_every: int  # controllers: their action_every (one LR per decision block); fixed schedules: record_every
    kind: str = "controller"  # a rival's arm kind
    params: str = "{}"  # a rival's params (JSON)


def _resolved(kind: str, params: dict, task: TaskConfig) -> dict:
    """``params`` with the task's defaults (``total_steps`` and the like) filled in."""
    return get_kind(kind).resolve(params, RunConfig(task=task))


def run_baselines(task: TaskConfig, data: ChildData, runs: Sequence[tuple[str, float, int]],
                  record_every: int = 10) -> list[Run]:
    """Children under baseline kinds at one LR each, stepped together: ``runs`` are ``(kind, lr, seed)``."""
    return run_arms(task, data, [(kind, kind, _resolved(kind, {"lr": lr}, task), seed) for kind, lr, seed in runs],
                    record_every)


def run_arms(task: TaskConfig, data: ChildData, runs: Sequence[tuple[str, str, dict, int]],
             record_every: int = 10) -> list[Run]:
    """Children under arm kinds, ``runs`` = ``(arm, kind, params, seed)`` with resolved params, in order.

    They train through the one runner (:func:`lrservice.runner.run_children`): kinds on the
    task's own optimizer together in one pool (batched when the model allows), optimizer-level
    kinds in another (separate children)."""
    kinds = [get_kind(kind) for _, kind, _, _ in runs]
    own = [k.optimizer_factory(task, r[2]) is not None for k, r in zip(kinds, runs)]
    out: dict[int, Run] = {}
    for group in ([i for i in range(len(runs)) if not own[i]], [i for i in range(len(runs)) if own[i]]):
        if group:
            chosen = [runs[i] for i in group]
            results = _run(task, data, [arm for arm, *_ in chosen], [ChildRun(kind, params, seed)
                                                                     for _, kind, params, seed in chosen],
                           [_lr(kinds[i], runs[i][2]) for i in group], record_every)
            out.update(zip(group, results))
    return [dataclasses.replace(out[i], kind=runs[i][1], params=json.dumps(runs[i][2], sort_keys=True))
            for i in range(len(runs))]


def _lr(kind, params: dict) -> float:
    """The LR a rival's row shows: its ``lr`` param (the peak for warmup kinds), else its LR at step 0."""
    full = kind.full(params)
    return float(full["lr"]) if isinstance(full.get("lr"), (int, float)) else kind.initial_lr(params)


def _run(task: TaskConfig, data: ChildData, arms: Sequence[str], children: Sequence[ChildRun],
         shown_lrs: Sequence[float], record_every: int) -> list[Run]:
    """The children in one pool to the end (final metrics only) as :class:`Run` rows."""
    result = run_children(task, children, data=data, eval_every=task.steps, trace_every=record_every)
    return [Run(arm, lr, child.seed, f["val_loss"], f["val_accuracy"], f["test_loss"], f["test_accuracy"],
                bool(f["diverged"]), tuple(result.trace[:, i]), record_every)
            for i, (arm, lr, child, f) in enumerate(zip(arms, shown_lrs, children, result.finals))]


def run_schedules(task: TaskConfig, data: ChildData, runs: Sequence[tuple[str, float, int, Callable[[int], float]]],
                  record_every: int = 10) -> list[Run]:
    """Children under any fixed schedules (step -> LR), stepped together: ``runs`` are ``(arm, lr, seed, fn)``."""
    return _run(task, data, [arm for arm, *_ in runs],
                [ChildRun("constant", {"lr": float(fn(0))}, int(seed), lr_fn=fn) for _, _, seed, fn in runs],
                [lr for _, lr, _, _ in runs], record_every)


def run_controller(controller: LearnedController, task: TaskConfig, data: ChildData,
                   starts: Sequence[tuple[float, int]], name: str = "controller",
                   pool_factory: PoolFactory | None = None) -> list[Run]:
    """The controller's deterministic policy driving one child per ``(initial_lr, seed)``.

    Children train in one pool (``pool_factory(task, k)``; default :func:`child_pool`, batched
    when the model allows); the first decision is at step 0, from the untrained child.
    """
    rules: ControllerConfig = dataclasses.replace(controller.config, tasks=(), baseline="none", twin_policy={})
    batch = EpisodeBatch(task, rules, len(starts), pool_factory=pool_factory, data_for=lambda _t: data)
    obs, _ = batch.reset([{"initial_lr": lr, "child_seed": seed} for lr, seed in starts])
    done = np.zeros(len(starts), dtype=bool)
    diverged = np.zeros(len(starts), dtype=bool)
    trace = []
    while not done.all():
        actions = controller.actions(obs)
        obs, _, terminated, infos = batch.step(actions, autoreset=False)
        trace.append(np.where(done, np.nan, infos["lr"]))
        diverged |= infos["diverged"]  # an env's episode ends at the step its child diverges
        done |= terminated
    val, test = batch.evaluate("val"), batch.evaluate("test")
    trace = np.asarray(trace)
    return [Run(name, lr, seed, val[i].loss, val[i].accuracy, test[i].loss, test[i].accuracy, bool(diverged[i]),
                tuple(trace[:, i]), controller.action_every) for i, (lr, seed) in enumerate(starts)]


def _label(point: dict, varying: Sequence[str]) -> str:
    shown = (f"{k}={point[k]:g}" if isinstance(point[k], float) else f"{k}={point[k]}" for k in varying)
    return ",".join(shown) or "fixed"


def tune_rivals(task: TaskConfig, data: ChildData, rivals: Sequence[Rival], tune_seeds: Sequence[int],
                log: Log = print) -> tuple[dict[str, dict], str]:
    """Each rival's grid point by the tuning rule (:func:`lrservice.kinds.tuned_winners`: lowest mean final
    validation loss over the tune seeds, a diverged child +inf, ties to the first point), and the best tuned
    rival's name (the lowest such mean)."""
    runs = [(r.name, r.kind, point, int(s)) for r in rivals for point in r.points for s in tune_seeds]
    rows = [{"arm": arm, "params": params, "final_val_loss": x.val_loss, "diverged": x.diverged}
            for (arm, _, params, _), x in zip(runs, run_arms(task, data, runs))]
    winners, points = tuned_winners(rows), grid_scores(rows)
    for r in rivals:
        varying = [k for k in r.points[0] if len({json.dumps(p.get(k)) for p in r.points}) > 1]
        scores = "  ".join(f"{_label(p, varying)}->{m:.4f}" for p, m in points[r.name])
        log(f"[lrservice] tuned {r.name}: {scores}  => {_label(winners[r.name][0], varying)}")
    best = min(winners, key=lambda name: winners[name][1])
    log(f"[lrservice] best tuned rival (on the tune seeds): {best} ({winners[best][1]:.4f})")
    return {name: params for name, (params, _) in winners.items()}, best


def compare_rows(runs: Sequence[Run], reference: dict[str, list[Run]]) -> list[dict]:
    """Summary rows: per arm and initial LR, mean ± std, and paired differences to each reference
    (``dval_vs_<ref>`` with ``_low``/``_high`` CI bounds, ``verdict_vs_<ref>``, ``dacc_vs_<ref>``)."""
    rows = []
    groups: dict[tuple[str, float], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.arm, r.initial_lr), []).append(r)
    for (arm, lr), rs in groups.items():
        rs = sorted(rs, key=lambda r: r.seed)
        row = {"arm": arm, "initial_lr": lr, "seeds": len(rs),
               "val_loss_mean": float(np.mean([r.val_loss for r in rs])),
               "val_loss_std": float(np.std([r.val_loss for r in rs], ddof=1)) if len(rs) > 1 else 0.0,
               "test_accuracy_mean": float(np.mean([r.test_accuracy for r in rs])),
               "test_accuracy_std": float(np.std([r.test_accuracy for r in rs], ddof=1)) if len(rs) > 1 else 0.0,
               "diverged": int(sum(r.diverged for r in rs))}
        for ref_name, ref_runs in reference.items():
            d = compare_paired({r.seed: r.val_loss for r in rs}, {r.seed: r.val_loss for r in ref_runs})
            acc = compare_paired({r.seed: r.test_accuracy for r in rs}, {r.seed: r.test_accuracy for r in ref_runs},
                                 lower_is_better=False)
            row.update({f"dval_vs_{ref_name}": d.mean, f"dval_vs_{ref_name}_low": d.ci_low,
                        f"dval_vs_{ref_name}_high": d.ci_high, f"verdict_vs_{ref_name}": d.verdict,
                        f"dacc_vs_{ref_name}": acc.mean, f"dacc_vs_{ref_name}_low": acc.ci_low,
                        f"dacc_vs_{ref_name}_high": acc.ci_high})
        rows.append(row)
    return rows


def evaluate_controllers(task: TaskConfig, data: ChildData, controllers: dict[str, LearnedController],
                         rivals: Sequence[Rival], tune_seeds: Sequence[int], seeds: Sequence[int],
                         initial_lrs: Sequence[float], log: Log = print) -> tuple[list[Run], list[dict], dict, str]:
    """The whole protocol: ``(runs, summary rows, tuned params per rival, best tuned rival)``; see the
    module docstring. ``rivals`` must hold ``constant`` and ``cosine`` (:func:`lrservice.control.rivals.rivals`)."""
    tuned, best = tune_rivals(task, data, rivals, tune_seeds, log=log)
    kinds = {r.name: r.kind for r in rivals}
    rival_runs = run_arms(task, data, [(name, kinds[name], params, int(s)) for name, params in tuned.items()
                                       for s in seeds])
    reference = {ref: [r for r in rival_runs if r.arm == (best if ref == "best" else ref)] for ref in REFERENCES}
    runs = list(rival_runs)
    for name, ctrl in controllers.items():
        log(f"[lrservice] evaluating {name} from initial LRs {list(initial_lrs)} on {len(seeds)} held-out seeds")
        runs += run_controller(ctrl, task, data, [(float(lr), int(s)) for lr in initial_lrs for s in seeds], name)
    rows = [{**row, "best_rival": best} for row in compare_rows(runs, reference)]
    return runs, rows, tuned, best
