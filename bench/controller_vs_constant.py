"""Does a learned controller beat a constant LR? PPO cost per iteration, then 5 held-out seeds.

1. Trains a controller with ``train_controller`` (default: digits/MLP, 1000-step episodes,
   the default ControllerConfig, 20 PPO iterations) and reports the wall time of one PPO
   iteration and env steps/s from its Parquet log (median [min-max], first iteration apart:
   it includes building the env runner and loading data).
2. Runs the controller and a constant LR (1e-3) on held-out child seeds, both starting at
   the same LR with the same batches (same seed), and compares final validation loss on the
   whole validation split and test accuracy, paired per seed.

Run: ``python bench/controller_vs_constant.py [--iterations 20] [--seeds 5] [--output DIR]``;
``--checkpoint PATH`` skips training and only evaluates. Honest numbers either way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import fmt, preamble, spread, table  # noqa: E402

EVAL_SEED_BASE = 10_000  # child seeds 10000.. are never drawn in training (the env draws from its own RNG)


def run_child(task, lr: float, seed: int, controller=None) -> dict:
    """One child run of ``task.steps`` steps: constant ``lr``, or the controller acting every N steps."""
    from lrservice.child.trainer import ChildTrainer

    trainer = ChildTrainer(task, data=_data(task), device="cpu")
    trainer.reset(lr, seed)
    every = controller.action_every if controller is not None else task.steps
    lrs = []
    if controller is not None:
        controller.reset()
    while trainer.step < task.steps and not trainer.diverged:
        if controller is not None:  # as in the env: observe, set the LR, then train the next block
            feats, _ = trainer.observe()
            trainer.lr = controller.next_lr(feats, trainer.lr)
        lrs.append(trainer.lr)
        trainer.train_steps(min(every, task.steps - trainer.step))
    val, test = trainer.evaluate("val"), trainer.evaluate("test")
    return {"val_loss": val.loss, "val_acc": val.accuracy, "test_acc": test.accuracy, "diverged": trainer.diverged,
            "lr_min": min(lrs), "lr_end": lrs[-1], "lr_max": max(lrs)}


_DATA = {}


def _data(task):
    from lrservice.child.trainer import load_task_data

    if task.dataset not in _DATA:
        _DATA[task.dataset] = load_task_data(task)
    return _DATA[task.dataset]


def trained_task(checkpoint: Path):
    """The task a checkpoint (or a training output dir's newest checkpoint) was trained on."""
    from lrservice.config import config_from_dict
    from lrservice.control.training import META_FILE, latest_checkpoint, read_metadata

    path = checkpoint if (checkpoint / META_FILE).is_file() else latest_checkpoint(checkpoint)
    return config_from_dict({"task": read_metadata(path)["task"]}).task


def train(config, output: Path, iterations: int) -> Path:
    """Train (or resume) into ``output``; returns the final checkpoint."""
    import ray

    from lrservice.control.training import train_controller

    ray.init(num_cpus=config.resources.num_cpus or 2, include_dashboard=False, log_to_driver=False)
    try:
        return Path(train_controller(config, output, iterations=iterations, resume=True,
                                     log=lambda line: print(line, flush=True)))
    finally:
        ray.shutdown()


def ppo_cost(output: Path) -> list[list[str]]:
    from lrservice.control.training import LOG_FILE, read_log

    rows = read_log(output / LOG_FILE)
    first, rest = rows[0], rows[1:] or rows
    return [
        ["first iteration (incl. runner start)", f"{first['iteration_s']:.1f}", f"{first['env_steps_per_s']:.1f}"],
        [f"iterations 2..{rows[-1]['iteration']}", fmt(spread([r["iteration_s"] for r in rest])),
         fmt(spread([r["env_steps_per_s"] for r in rest]))],
        ["final val loss (training episodes), first -> last", f"{rows[0]['final_val_loss']:.4f}",
         f"{rows[-1]['final_val_loss']:.4f}"],
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5, help="held-out child seeds")
    parser.add_argument("--lr", type=float, default=1e-3, help="the constant LR, and the controller's start")
    parser.add_argument("--steps", type=int, default=1000, help="child steps per episode / run")
    parser.add_argument("--output", default="results/bench-controller", help="training output dir (resumed if present)")
    parser.add_argument("--checkpoint", default=None, help="evaluate this checkpoint, skip training")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from lrservice.config import config_from_dict
    from lrservice.control.controller import LearnedController

    preamble(f"controller vs constant LR {args.lr:g} (digits, mlp; training: {args.steps}-step episodes)")
    config = config_from_dict({"task": {"dataset": "digits", "model": "mlp", "steps": args.steps, "device": "cpu"},
                               "controller": {"iterations": args.iterations}, "resources": {"num_cpus": 2}})
    output = Path(args.output)
    started = time.perf_counter()
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    else:
        checkpoint = train(config, output, args.iterations)
        print(f"[lrservice] trained in {time.perf_counter() - started:.0f} s -> {checkpoint}", flush=True)
    ctrl = LearnedController.from_checkpoint(checkpoint)
    task = trained_task(checkpoint)
    print(f"[lrservice] evaluating {checkpoint} on its task ({task.dataset}/{task.model}, {task.steps} steps, "
          f"batch {task.batch_size}), seeds {EVAL_SEED_BASE}..{EVAL_SEED_BASE + args.seeds - 1}", flush=True)
    rows, diffs, wins = [], [], 0
    results = {"constant": [], "controller": []}
    for i in range(args.seeds):
        seed = EVAL_SEED_BASE + i
        const = run_child(task, args.lr, seed)
        learned = run_child(task, args.lr, seed, controller=ctrl)
        results["constant"].append(const)
        results["controller"].append(learned)
        diff = learned["val_loss"] - const["val_loss"]
        diffs.append(diff)
        wins += diff < 0
        rows.append([seed, f"{const['val_loss']:.4f}", f"{learned['val_loss']:.4f}", f"{diff:+.4f}",
                     f"{const['test_acc']:.4f}", f"{learned['test_acc']:.4f}",
                     f"{learned['lr_min']:.2e} / {learned['lr_end']:.2e} / {learned['lr_max']:.2e}"])
        print(f"[lrservice] seed {seed}: constant {const['val_loss']:.4f}  controller {learned['val_loss']:.4f}",
              flush=True)
    if not args.checkpoint:
        print(table(["PPO (default config)", "s per iteration", "env steps/s"], ppo_cost(output)))
    print(table(["seed", "constant val loss", "controller val loss", "diff", "constant test acc",
                 "controller test acc", "controller lr min / end / max"], rows))

    def mean_std(arm, key):
        values = [r[key] for r in results[arm]]
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0:.4f}"

    print(table(["arm", "final val loss", "test accuracy"],
                [[arm, mean_std(arm, "val_loss"), mean_std(arm, "test_acc")] for arm in results]))
    print(f"[lrservice] controller lower val loss on {wins}/{args.seeds} seeds; "
          f"mean paired difference {statistics.mean(diffs):+.4f} (negative = controller better); "
          f"checkpoint {checkpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
