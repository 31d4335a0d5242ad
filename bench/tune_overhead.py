"""Tune comparison overhead: wall time per trial in a Tuner vs the same training as a bare loop.

Each trial trains one child (digits, mlp) for ``--steps`` steps at a constant LR and reports
validation loss every ``eval_every`` steps. Uses the compare arm's trainable when
``lrservice.compare.trainable`` is there, else a minimal function trainable around
ChildTrainer (below). Trials run one at a time (per-trial wall) and two at a time
(throughput on 2 cores).
Run: ``python bench/tune_overhead.py [--repeats 3] [--trials 4] [--steps 300]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import fmt, preamble, spread, table, timed  # noqa: E402

TASK = {"dataset": "digits", "model": "mlp", "batch_size": 32, "val_subset": 128, "eval_every": 10,
        "device": "cpu"}


def train_child(config: dict, report=None) -> float:
    """One trial's work: ``steps`` child steps, an observation every ``eval_every`` steps."""
    import torch

    from lrservice.child.trainer import ChildTrainer
    from lrservice.config import config_from_dict

    torch.set_num_threads(1)
    task = config_from_dict({"task": {**TASK, "steps": config["steps"]}}).task
    child = ChildTrainer(task)
    child.reset(config["lr"], config["seed"])
    val = None
    for _ in range(task.steps // task.eval_every):
        result = child.train_steps(task.eval_every)
        _, val = child.observe()
        if report is not None:
            report({"step": child.step, "train_loss": result.mean_loss, "val_loss": val.loss})
    return val.loss


def trainable(config: dict) -> None:
    from ray import tune

    train_child(config, report=tune.report)


def tune_wall(trials: int, steps: int, concurrent: int) -> float:
    from ray import tune

    space = {"lr": 1e-3, "steps": steps, "seed": tune.grid_search(list(range(trials)))}
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space=space,
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=storage, name="bench", verbose=0),
        )
        seconds = timed(tuner.fit)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    import ray
    import torch

    torch.set_num_threads(1)
    preamble(f"Tune overhead per trial ({args.trials} trials x {args.steps} child steps, digits mlp)")
    try:
        import lrservice.compare.trainable  # noqa: F401
        print("[lrservice] note: lrservice.compare.trainable exists; this run still times the minimal trainable")
    except ImportError:
        print("[lrservice] lrservice.compare.trainable not there yet: timing a minimal ChildTrainer trainable")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        train_child({"lr": 1e-3, "steps": 20, "seed": 0})
        bare, seq, par = [], [], []
        for r in range(args.repeats):
            print(f"[lrservice] repeat {r + 1}/{args.repeats} ...", flush=True)
            bare.append(timed(lambda: [train_child({"lr": 1e-3, "steps": args.steps, "seed": s})
                                       for s in range(args.trials)]) / args.trials)
            seq.append(tune_wall(args.trials, args.steps, 1) / args.trials)
            par.append(tune_wall(args.trials, args.steps, 2) / args.trials)
    finally:
        ray.shutdown()
    extra = lambda runs: fmt(spread([t - b for t, b in zip(runs, bare)]), 2)
    rows = [
        ["bare loop (in process)", fmt(spread(bare), 2), "1.00", "0"],
        ["Tune, 1 trial at a time", fmt(spread(seq), 2), fmt(spread([s / b for s, b in zip(seq, bare)]), 2),
         extra(seq)],
        ["Tune, 2 trials at a time", fmt(spread(par), 2), fmt(spread([p / b for p, b in zip(par, bare)]), 2),
         extra(par)],
    ]
    print(table(["how", "wall s per trial", "ratio to bare", "overhead s per trial"], rows))
    print("[lrservice] figures: median [min-max] over repeats; Tune wall includes Tuner start, trial actors, "
          "reporting every 10 steps and result files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
