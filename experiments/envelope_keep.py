"""What does an envelope controller add to its envelope? Paired against "keep" on the same seeds.

    python experiments/envelope_keep.py CONFIG CONTROLLER EVALUATION_DIR ARM

A controller with ``envelope: cosine`` that always keeps is cosine from the initial LR (set per
decision block, as in an episode). This runs that schedule on CONFIG's task for every
(initial LR, seed) of arm ARM in an ``evaluate-controller`` output (EVALUATION_DIR/runs.parquet)
— same seed = same initial weights and batch order — and prints the paired difference of final
validation loss and test accuracy, controller minus keep, with 95% bootstrap CIs.
docs/controller.md quotes it for the envelope rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from lrservice.child.trainer import load_task_data
from lrservice.config import load_config
from lrservice.control.actions import lr_in_force
from lrservice.control.controller import LearnedController
from lrservice.control.evaluate import run_schedules
from lrservice.stats import compare_paired


def keep_schedule(controller: LearnedController, lr: float, steps: int):
    """Step -> LR of the controller that always keeps: the level ``lr`` under the envelope, per block."""
    every = controller.action_every
    return lambda s: lr_in_force(lr, (s // every) * every / steps, controller.config)


def main(config_path: str, controller_path: str, evaluation: str, arm: str) -> None:
    task = load_config(config_path).task
    controller = LearnedController.from_checkpoint(controller_path)
    runs = pd.read_parquet(Path(evaluation) / "runs.parquet")
    mine = runs[runs.arm == arm]
    if mine.empty:
        raise SystemExit(f"{evaluation}: no runs of arm {arm!r}; arms there: {', '.join(sorted(runs.arm.unique()))}")
    keep = run_schedules(task, load_task_data(task), [
        ("keep", float(lr), int(seed), keep_schedule(controller, float(lr), task.steps))
        for lr, seed in zip(mine.initial_lr, mine.seed)])
    print(f"{arm} ({controller.config.envelope} envelope) vs keep, {task.dataset}/{task.model}, "
          f"{mine.seed.nunique()} seeds")
    for lr, group in mine.groupby("initial_lr"):
        ref = [r for r in keep if r.initial_lr == lr]
        d = compare_paired(dict(zip(group.seed, group.val_loss)), {r.seed: r.val_loss for r in ref})
        acc = compare_paired(dict(zip(group.seed, group.test_accuracy)), {r.seed: r.test_accuracy for r in ref},
                             lower_is_better=False)
        keep_loss = sum(r.val_loss for r in ref) / len(ref)
        print(f"  from {lr:g}: keep {keep_loss:.4f}, controller {group.val_loss.mean():.4f}; "
              f"d val loss {d.mean:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}] ({d.verdict}); "
              f"d test acc {acc.mean:+.4f} [{acc.ci_low:+.4f}, {acc.ci_high:+.4f}]")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__.strip().splitlines()[2].strip())
    main(*sys.argv[1:])
