"""Per-child throughput: K children in one BatchedChildTrainer vs K separate ChildTrainers.

Two tables in one run:

1. ``--model`` (MLP by default) over ``--ks``: trainer level and env level (one LRVectorEnv
   with K sub-envs vs K separate single envs: LRControlEnv when importable, else LRVectorEnv(1)).
2. Every model of ``--models`` at K = ``--models-k`` (16): the MLP through its hand-written fast
   path and through the generic vmap path (the fast path stays only while it wins here),
   LeNet-5, ``convbn``, a small conv net with BatchNorm defined in this file, i.e. not one
   of ``lrservice/child/models.py`` (it reaches the trainers as a plugin, see :func:`model_spec`),
   and ``convnet1d``, the worked example's 1-D conv net (``examples/own_task``) on MNIST-1D.

Run: ``python bench/batched.py [--device cpu|cuda] [--model mlp|lenet5] [--repeats 5] [--clock wall|cpu]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import fmt, preamble, spread, table  # noqa: E402
from measure import timed as wall_timed  # noqa: E402

from lrservice.child.batched import BatchedChildTrainer  # noqa: E402
from lrservice.child.trainer import ChildTrainer, load_task_data  # noqa: E402
from lrservice.config import config_from_dict  # noqa: E402
from lrservice.control.vector_env import LRVectorEnv  # noqa: E402


def cpu_timed(fn) -> float:
    """CPU seconds this process spent in one call: on a box shared with other jobs, time spent
    waiting for a core drops out (contention for caches and memory bandwidth does not)."""
    t = time.process_time()
    fn()
    return time.process_time() - t


timed = wall_timed  # main() switches to cpu_timed with --clock cpu


class ConvBN(nn.Module):
    """A small conv net with BatchNorm, not one of lrservice's models: two 3x3 conv + BatchNorm +
    ReLU stages (8 and 16 maps, no bias ahead of BatchNorm), 2x2 average pooling, a linear head."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(input_shape[0], 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AvgPool2d(2), nn.Flatten())
        with torch.no_grad():
            width = self.body(torch.zeros(2, *input_shape)).shape[1]
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


OUTSIDE_MODELS = {"convbn": ConvBN}
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "own_task"
ONE_D = {"convnet1d": "signals.model:ConvNet1d"}  # the worked example's 1-D conv net, on MNIST-1D


def model_spec(name: str) -> str:
    """``task.model`` for a name: an outside model as a plugin (``"<this module>:Class"``, the door a
    user's model comes through), lrservice's own by name."""
    if name in ONE_D:
        return ONE_D[name]
    return f"{__name__}:{OUTSIDE_MODELS[name].__name__}" if name in OUTSIDE_MODELS else name


def model_task(task, data, name: str):
    """The task and data a model of the second table trains on: digits, or MNIST-1D for a 1-D model."""
    if name not in ONE_D:
        return dataclasses.replace(task, model=model_spec(name)), data
    one_d = dataclasses.replace(task, dataset="mnist1d", model=ONE_D[name], val_size=500,
                                plugin_dirs=(str(EXAMPLE),))
    return one_d, load_task_data(one_d)


def single_env_factory(env_config: dict, data):
    """K separate envs: LRControlEnv if the teammate's env is there, else one-child vector envs."""
    try:
        from lrservice.control.env import LRControlEnv

        return "LRControlEnv", lambda: LRControlEnv(env_config)
    except ImportError:
        return "LRVectorEnv(1)", lambda: LRVectorEnv(env_config, num_envs=1, data=data)


def trainer_rates(task, data, k: int, steps: int, repeats: int) -> tuple[list[float], list[float]]:
    batched = BatchedChildTrainer(task, k, data=data)
    batched.reset([1e-3] * k, list(range(k)))
    separate = [ChildTrainer(task, data=data) for _ in range(k)]
    for i, child in enumerate(separate):
        child.reset(1e-3, i)
    batched.train_steps(5)
    for child in separate:
        child.train_steps(5)
    b, s = [], []
    for _ in range(repeats):
        b.append(k * steps / timed(lambda: batched.train_steps(steps)))
        s.append(k * steps / timed(lambda: [c.train_steps(steps) for c in separate]))
    return b, s


def env_rates(env_config, data, k: int, env_steps: int, repeats: int, make_single) -> tuple[list[float], list[float]]:
    vec = LRVectorEnv(env_config, num_envs=k, data=data)
    singles = [make_single() for _ in range(k)]
    vec.reset(seed=0)
    for i, env in enumerate(singles):
        env.reset(seed=i)
    keep = np.full(k, 2)

    def run_vec():
        for _ in range(env_steps):
            vec.step(keep)

    def run_singles():
        for env in singles:
            for _ in range(env_steps):
                _, _, term, trunc, _ = env.step(keep[:1] if isinstance(env, LRVectorEnv) else 2)
                if np.any(term) or np.any(trunc):
                    env.reset()

    b, s = [], []
    for _ in range(repeats):
        b.append(k * env_steps / timed(run_vec))
        s.append(k * env_steps / timed(run_singles))
    return b, s


def model_rates(task, data, k: int, steps: int, repeats: int) -> tuple[str, dict[str, list[float]]]:
    """Child steps/s of K children batched (and, for the MLP, batched without its fast path) and of
    K separate ChildTrainers, timed in turn within each repeat; also the batched pool's mode."""
    runners = {"batched": BatchedChildTrainer(task, k, data=data)}
    if runners["batched"].mode != "batched (vmap)":
        runners["vmap"] = BatchedChildTrainer(task, k, data=data, fast_path=False)
    elif any("forward" in vars(m) for m in runners["batched"]._vmapped.modules()):  # a conv taken over
        runners["vmap, plain conv"] = BatchedChildTrainer(task, k, data=data, channels_last_conv=False)
    for pool in runners.values():
        pool.reset([1e-3] * k, list(range(k)))
        pool.train_steps(5)
    separate = [ChildTrainer(task, data=data) for _ in range(k)]
    for i, child in enumerate(separate):
        child.reset(1e-3, i)
        child.train_steps(5)
    rates = {name: [] for name in [*runners, "separate"]}
    for _ in range(repeats):
        for name, pool in runners.items():
            rates[name].append(k * steps / timed(lambda p=pool: p.train_steps(steps)))
        rates["separate"].append(k * steps / timed(lambda: [c.train_steps(steps) for c in separate]))
    return runners["batched"].mode, rates


def models_table(task, data, models: list[str], k: int, steps: int, repeats: int) -> str:
    rows = []
    for model in models:
        print(f"[lrservice] {model} at K={k} ...", flush=True)
        mtask, mdata = model_task(task, data, model)
        worst = check(mtask, mdata)
        mode, rates = model_rates(mtask, mdata, k, steps, repeats)
        sep = rates["separate"]
        for name in [n for n in rates if n != "separate"]:
            shown = {"batched": mode, "vmap": "batched (vmap)"}.get(name, f"batched ({name})")
            rows.append([model, shown, f"{worst:.1e}" if name == "batched" else "", fmt(spread(rates[name]), 0),
                         fmt(spread(sep), 0), fmt(spread([b / s for b, s in zip(rates[name], sep)]), 2)])
        if "vmap" in rates:
            ratio = [f / v for f, v in zip(rates["batched"], rates["vmap"])]
            print(f"[lrservice] {model}: fast path / vmap path at K={k}: {fmt(spread(ratio), 2)} "
                  f"(> 1: the hand-written path earns its keep)")
        if "vmap, plain conv" in rates:
            ratio = [c / v for c, v in zip(rates["batched"], rates["vmap, plain conv"])]
            print(f"[lrservice] {model}: channels-last / plain vmapped convolutions at K={k}: "
                  f"{fmt(spread(ratio), 2)} (> 1: lrservice.child.batched_conv earns its keep)")
    return table(["model", "batched mode", "max rel. feature diff", "batched child-steps/s",
                  f"{k} separate child-steps/s", "ratio"], rows)


def check(task, data, k: int = 4, blocks: int = 5) -> float:
    """Largest relative feature difference, batched vs separate, over ``blocks`` x 10 steps."""
    lrs, seeds = [1e-2, 1e-3, 3e-3, 1e-4][:k], list(range(k))
    batched = BatchedChildTrainer(task, len(lrs), data=data)
    batched.reset(lrs, seeds)
    separate = [ChildTrainer(task, data=data) for _ in lrs]
    for child, lr, seed in zip(separate, lrs, seeds):
        child.reset(lr, seed)
    worst = 0.0
    for _ in range(blocks):
        batched.train_steps(10)
        fb, _ = batched.observe()
        for i, child in enumerate(separate):
            child.train_steps(10)
            f, _ = child.observe()
            worst = max(worst, float(np.max(np.abs(f - fb[i]) / (np.abs(f) + 1e-6))))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="mlp", choices=["mlp", "lenet5"])
    parser.add_argument("--ks", default="1,2,4,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50, help="child steps per timed block")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", default="mlp,lenet5,convbn,convnet1d",
                        help="models for the second table (empty: skip it); convbn is defined in this file, "
                             "convnet1d is examples/own_task's (on MNIST-1D)")
    parser.add_argument("--models-k", type=int, default=16, help="children per pool in the second table")
    parser.add_argument("--skip-ks", action="store_true", help="only the second table")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall seconds, or this process's CPU seconds (CPU only; for a loaded shared box)")
    args = parser.parse_args()
    global timed
    timed = cpu_timed if args.clock == "cpu" else wall_timed
    torch.set_num_threads(1)
    preamble(f"batched children vs separate ({args.model}, digits, batch {args.batch_size}; {args.clock} clock)",
             args.device)
    env_config = {
        "task": {"dataset": "digits", "model": args.model, "batch_size": args.batch_size, "steps": 10_000,
                 "val_subset": 128, "device": args.device},
        "controller": {"action_every": 10},
    }
    task = config_from_dict(env_config).task
    data = load_task_data(task)
    if args.models:
        print(models_table(task, data, args.models.split(","), args.models_k, args.steps, args.repeats))
        print("[lrservice] figures: median [min-max] over repeats; feature diff: float32, 4 children, 50 steps")
    if args.skip_ks:
        return 0
    print(f"[lrservice] check: max relative feature difference batched vs separate over 50 steps: "
          f"{check(task, data):.2e}")
    single_name, make_single = single_env_factory(env_config, data)
    rows = []
    for k in [int(v) for v in args.ks.split(",")]:
        print(f"[lrservice] K={k} ...", flush=True)
        tb, ts = trainer_rates(task, data, k, args.steps, args.repeats)
        eb, es = env_rates(env_config, data, k, args.steps // 10, args.repeats, make_single)
        tr = [b / s for b, s in zip(tb, ts)]
        er = [b / s for b, s in zip(eb, es)]
        rows.append([k, fmt(spread(tb), 0), fmt(spread(ts), 0), fmt(spread(tr), 2),
                     fmt(spread(eb), 1), fmt(spread(es), 1), fmt(spread(er), 2)])
    print(table(["K", "batched child-steps/s", "separate child-steps/s", "ratio",
                 "vector env-steps/s", f"{single_name} x K env-steps/s", "ratio"], rows))
    print("[lrservice] figures: median [min-max] over repeats; env step = 10 child steps + observe()")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
