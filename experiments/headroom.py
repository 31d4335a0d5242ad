"""How much room is there above tuned cosine? Many fixed schedules on a task's held-out seeds.

    python experiments/headroom.py configs/digits-mlp-controller.yaml [--seeds 1000-1039]

Runs cosine (7 peak LRs), linear decay, warmup-free WSD (last 20% / 40% linear decay),
exponential decay to 1e-5 and cosine after a 30% linear warmup from a tenth of the peak (the shape of
``envelope_warmup: 0.3``; 4 peak LRs each) on the config's ``evaluate.seeds`` (or ``--seeds``) — all
children in one batched pool, same seed = same initial weights and batch order — and prints each
schedule's final validation loss, test accuracy and paired difference to cosine at 3e-3 (the
LR the evidence protocol tunes cosine to on digits and MNIST-1D). docs/controller.md quotes it:
a controller can only beat tuned cosine by more than the best fixed schedule does if it adapts
to the run in front of it.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from lrservice.child.trainer import load_task_data
from lrservice.commands.evaluate_controller import parse_seeds
from lrservice.config import ControllerConfig, load_config
from lrservice.control.actions import lr_in_force
from lrservice.control.evaluate import run_schedules

REFERENCE = "cosine 0.003"
WARMUP_ENVELOPE = ControllerConfig(envelope="cosine", envelope_warmup=0.3)  # a level under it, held fixed


def schedules(steps: int) -> dict:
    """Name -> step -> LR."""
    out = {}
    for lr in (1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 7e-3, 1e-2):
        out[f"cosine {lr:g}"] = lambda s, lr=lr: lr * 0.5 * (1 + math.cos(math.pi * s / steps))
    for lr in (2e-3, 3e-3, 5e-3, 7e-3):
        out[f"linear {lr:g}"] = lambda s, lr=lr: lr * (1 - s / steps)
        for frac in (0.2, 0.4):
            out[f"wsd{int(frac * 100)} {lr:g}"] = (
                lambda s, lr=lr, frac=frac: lr if s < (1 - frac) * steps else lr * (steps - s) / (frac * steps))
        out[f"exp {lr:g}->1e-5"] = lambda s, lr=lr: lr * (1e-5 / lr) ** (s / steps)
        out[f"warmup30-cosine {lr:g}"] = lambda s, lr=lr: lr_in_force(lr, s / steps, WARMUP_ENVELOPE)
    return out


def main(config_path: str, seeds_spec: str | None = None) -> None:
    torch.set_num_threads(1)
    config = load_config(config_path)
    task, seeds = config.task, parse_seeds(seeds_spec) if seeds_spec else list(config.evaluate.seeds)
    started = time.perf_counter()
    runs = run_schedules(task, load_task_data(task), [(name, fn(0), seed, fn) for name, fn in
                                                        schedules(task.steps).items() for seed in seeds])
    by = {}
    for run in runs:
        by.setdefault(run.arm, []).append((run.val_loss, run.test_accuracy))
    ref = np.array([v for v, _ in by[REFERENCE]])
    print(f"{task.dataset}/{task.model}, {task.steps} steps, held-out seeds {seeds[0]}..{seeds[-1]}\n")
    print(f"| schedule | final val loss | test acc | Δ val loss vs {REFERENCE} (± s.e.) |\n|---|---|---|---|")
    for name, rows in sorted(by.items(), key=lambda kv: np.mean([v for v, _ in kv[1]])):
        a = np.array(rows)
        d = a[:, 0] - ref
        print(f"| {name} | {a[:, 0].mean():.4f} ± {a[:, 0].std(ddof=1):.4f} | {a[:, 1].mean():.4f} | "
              f"{d.mean():+.4f} ± {d.std(ddof=1) / math.sqrt(len(d)):.4f} |")
    print(f"\n{len(runs)} children, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--seeds", help="held-out seeds, e.g. 1000-1039 (default: the config's evaluate.seeds)")
    args = parser.parse_args()
    main(args.config, args.seeds)
