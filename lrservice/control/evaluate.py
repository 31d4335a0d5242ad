"""The evidence protocol for a learned controller (shared/DESIGN.md), run without Ray.

1. Tune each baseline (constant, cosine) on its LR grid over the tune seeds; pick the LR
   with the lowest mean final validation loss.
2. On held-out seeds never used for tuning or training, run each tuned baseline once and
   each controller from every initial LR; same seed = same initial weights and batch order.
3. Per controller and initial LR: the paired per-seed difference of final validation loss
   (and test accuracy) against tuned cosine and tuned constant, with 95% bootstrap CIs.

Children of a phase train together in one child pool (batched when the model allows), so a
whole evaluation of digits-MLP takes about a minute on a laptop core. Test metrics are
reported, never used for selection.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from lrservice.child.data import ChildData
from lrservice.child.pool import child_pool
from lrservice.stats import compare_paired
from lrservice.config import ControllerConfig, TaskConfig
from lrservice.control.controller import LearnedController
from lrservice.control.episodes import EpisodeBatch
from lrservice.schedules import make_baseline

Log = Callable[[str], None]
BASELINE_KINDS = ("constant", "cosine")  # the tuned baselines every controller is compared with (evaluate.<kind>_grid)


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


def _schedule_lr(kind: str, lr: float, steps: int) -> Callable[[int], float]:
    params = {"lr": lr, "total_steps": steps} if kind == "cosine" else {"lr": lr}
    return make_baseline(kind, **params).to_policy()


def run_baselines(task: TaskConfig, data: ChildData, runs: Sequence[tuple[str, float, int]],
                  record_every: int = 10) -> list[Run]:
    """Children under tuned-baseline schedules, stepped together: ``runs`` are ``(kind, lr, seed)``."""
    return run_schedules(task, data, [(kind, lr, seed, _schedule_lr(kind, lr, task.steps)) for kind, lr, seed in runs],
                         record_every)


def run_schedules(task: TaskConfig, data: ChildData, runs: Sequence[tuple[str, float, int, Callable[[int], float]]],
                  record_every: int = 10) -> list[Run]:
    """Children under any fixed schedules (step -> LR), stepped together: ``runs`` are ``(arm, lr, seed, fn)``."""
    pool = child_pool(task, len(runs), data=data)
    fns = [fn for *_, fn in runs]
    for i, (_, _, seed, fn) in enumerate(runs):
        pool.reset_child(i, float(fn(0)), seed)
    trace = []
    for step in range(task.steps):
        lrs = [f(step) for f in fns]
        if step % record_every == 0:
            trace.append(lrs)
        pool.train_steps(1, lrs=lrs)
    val, test = pool.evaluate("val"), pool.evaluate("test")
    diverged = pool.diverged
    trace = np.asarray(trace)
    return [Run(arm, lr, seed, val[i].loss, val[i].accuracy, test[i].loss, test[i].accuracy, bool(diverged[i]),
                tuple(trace[:, i]), record_every) for i, (arm, lr, seed, _) in enumerate(runs)]


def run_controller(controller: LearnedController, task: TaskConfig, data: ChildData,
                   starts: Sequence[tuple[float, int]], name: str = "controller") -> list[Run]:
    """The controller's deterministic policy driving one child per ``(initial_lr, seed)``."""
    rules: ControllerConfig = dataclasses.replace(controller.config, tasks=(), baseline="none", twin_policy={})
    batch = EpisodeBatch(task, rules, len(starts), data_for=lambda _t: data)
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


def tune_baselines(task: TaskConfig, data: ChildData, grids: dict[str, Sequence[float]],
                   tune_seeds: Sequence[int], log: Log = print) -> dict[str, float]:
    """The best LR of each baseline kind by mean final validation loss over the tune seeds."""
    runs = [(kind, float(lr), int(s)) for kind, grid in grids.items() for lr in grid for s in tune_seeds]
    results = run_baselines(task, data, runs)
    best = {}
    for kind, grid in grids.items():
        means = {lr: np.mean([r.val_loss if np.isfinite(r.val_loss) else np.inf for r in results
                              if r.arm == kind and r.initial_lr == float(lr)]) for lr in grid}
        best[kind] = float(min(means, key=means.get))
        log(f"[lrservice] tuned {kind}: " + "  ".join(f"{lr:g}->{m:.4f}" for lr, m in means.items())
            + f"  => lr {best[kind]:g}")
    return best


def compare_rows(runs: Sequence[Run], reference: dict[str, list[Run]]) -> list[dict]:
    """Summary rows: per arm and initial LR, mean ± std, and paired differences to each reference."""
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
                         grids: dict[str, Sequence[float]], tune_seeds: Sequence[int], seeds: Sequence[int],
                         initial_lrs: Sequence[float], log: Log = print) -> tuple[list[Run], list[dict], dict]:
    """The whole protocol: ``(runs, summary rows, tuned LRs)``; see the module docstring."""
    tuned = tune_baselines(task, data, grids, tune_seeds, log=log)
    baseline_runs = run_baselines(task, data, [(kind, tuned[kind], int(s)) for kind in tuned for s in seeds])
    reference = {kind: [r for r in baseline_runs if r.arm == kind] for kind in tuned}
    runs = list(baseline_runs)
    for name, ctrl in controllers.items():
        log(f"[lrservice] evaluating {name} from initial LRs {list(initial_lrs)} on {len(seeds)} held-out seeds")
        runs += run_controller(ctrl, task, data, [(float(lr), int(s)) for lr in initial_lrs for s in seeds], name)
    return runs, compare_rows(runs, reference), tuned
