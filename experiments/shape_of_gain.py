"""Is a controller's gain its schedule's shape or its adaptation to the run? (issue 23)

    python experiments/shape_of_gain.py pretrained:digits-mlp [more controllers ...] --seeds 5000-5039

For each controller: its median LR in force every 50 steps from 1e-2 and 1e-3 and its paired
difference to cosine at 3e-3 (digits' tuned cosine); then the first controller's median LRs played
back as *fixed* schedules, and cosine after a linear warmup from 2e-4 (peaks 2e-3 and 3e-3, warmups of
200, 300 and 350 steps), on the same seeds. If the playback does as well as the controller, its gain
is a shape that a fixed schedule can have. docs/controller.md quotes it on exploration seeds
5000-5039, used for nothing else.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from lrservice.child.trainer import load_task_data
from lrservice.commands.evaluate_controller import parse_seeds
from lrservice.control.controller import LearnedController
from lrservice.control.evaluate import run_controller, run_schedules
from lrservice.stats import compare_paired

REFERENCE, STARTS = 3e-3, (1e-2, 1e-3)


def paired(runs, reference) -> str:
    """Δ final validation loss against the reference per seed, with the evidence protocol's 95% bootstrap CI."""
    loss = compare_paired({r.seed: r.val_loss for r in runs}, {s: r.val_loss for s, r in reference.items()})
    acc = np.array([r.test_accuracy - reference[r.seed].test_accuracy for r in runs])
    return (f"Δ {loss.mean:+.4f} [{loss.ci_low:+.4f}, {loss.ci_high:+.4f}], "
            f"test acc {100 * acc.mean():+.2f} points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("controllers", nargs="+", help="exports, output directories or pretrained:<name>")
    parser.add_argument("--seeds", default="5000-5039")
    args = parser.parse_args()
    torch.set_num_threads(2)
    seeds = parse_seeds(args.seeds)
    controllers = [LearnedController.from_checkpoint(c) for c in args.controllers]
    task = controllers[0].task
    data = load_task_data(task)
    steps = task.steps

    def cosine(s, peak=REFERENCE):
        return peak * 0.5 * (1 + math.cos(math.pi * s / steps))

    reference = {r.seed: r for r in run_schedules(task, data, [("cosine", REFERENCE, s, cosine) for s in seeds])}
    medians = {}
    for name, ctrl in zip(args.controllers, controllers):
        runs = run_controller(ctrl, task, data, [(lr, s) for lr in STARTS for s in seeds], name=name)
        for lr in STARTS:
            mine = [r for r in runs if r.initial_lr == lr]
            median = np.median(np.array([r.lrs for r in mine]), axis=0)
            medians.setdefault(lr, median)  # the first controller's, for the playback
            every = max(1, 50 // ctrl.action_every)
            print(f"{name} from {lr:.0e}: {paired(mine, reference)}; median LR every 50 steps: "
                  + " ".join(f"{v:.1e}" for v in median[::every]), flush=True)
    block = controllers[0].action_every
    fixed = {f"{args.controllers[0]} from {lr:.0e}, played back": (
        lambda s, m=medians[lr]: float(m[min(s // block, len(m) - 1)])) for lr in STARTS}
    for peak in (2e-3, 3e-3):
        for w in (200, 300, 350):
            fixed[f"cosine {peak:g} after a {w}-step warmup from 2e-4"] = (
                lambda s, peak=peak, w=w: 2e-4 + (peak - 2e-4) * s / w if s < w
                else peak * 0.5 * (1 + math.cos(math.pi * (s - w) / (steps - w))))
    runs = run_schedules(task, data, [(name, fn(0), s, fn) for name, fn in fixed.items() for s in seeds])
    for name in fixed:
        print(f"{name}: {paired([r for r in runs if r.arm == name], reference)}", flush=True)


if __name__ == "__main__":
    main()
