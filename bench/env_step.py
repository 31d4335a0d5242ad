"""Env-step throughput vs a bare PyTorch loop doing the same child work, per validation-subset size.

One env step = ``action_every`` child steps (forward, backward, Adam) + the 7 features on the
validation subset. The bare loop does exactly that with no env, no trainer object and no
per-step host sync. Also printed: the share of env time spent on validation/features
(``ChildTrainer.observe`` timed inside the same loop).
Run: ``python bench/env_step.py [--repeats 5] [--env-steps 20] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import fmt, preamble, spread, table, timed  # noqa: E402

from lrservice.child.features import observation_features  # noqa: E402
from lrservice.child.models import build_model  # noqa: E402
from lrservice.child.trainer import ChildTrainer, load_task_data  # noqa: E402
from lrservice.config import config_from_dict  # noqa: E402


def make_envs(env_config: dict, data):
    """The single env (one ChildTrainer) and the vector env with one child, on the same data."""
    from lrservice.control.env import LRControlEnv
    from lrservice.control.vector_env import LRVectorEnv

    return [("LRControlEnv", LRControlEnv(env_config, data=data), 2),
            ("LRVectorEnv(1)", LRVectorEnv(env_config, num_envs=1, data=data), np.array([2]))]


def bare_loop(task, data, every: int, env_steps: int, lr: float = 1e-3) -> None:
    """The same child updates and features written as a plain loop."""
    torch.manual_seed(0)
    model = build_model(task.model, data.input_shape, data.num_classes).to(data.train_x.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(1)
    n, b = data.train_x.shape[0], task.batch_size
    order, cursor = torch.randperm(n, generator=gen), 0
    val_x, val_y = data.val_x[:task.val_subset], data.val_y[:task.val_subset]
    prev = None
    for _ in range(env_steps):
        total = torch.zeros((), device=data.train_x.device)
        model.train()
        for _ in range(every):
            if cursor + b > n:
                order, cursor = torch.randperm(n, generator=gen), 0
            idx = order[cursor:cursor + b].to(data.train_x.device)
            cursor += b
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        model.eval()
        with torch.no_grad():
            out = model(val_x)
            val_loss = float(F.cross_entropy(out, val_y))
        observation_features(float(total) / every, val_loss, out, prev, model.head.weight.detach(), lr)
        prev = out


def observe_share(task, data, every: int, env_steps: int) -> float:
    """Fraction of a ChildTrainer's (train_steps + observe) time spent in observe()."""
    child = ChildTrainer(task, data=data)
    child.reset(1e-3, 0)
    t_train = t_obs = 0.0
    for _ in range(env_steps):
        t = time.perf_counter()
        child.train_steps(every)
        t_train += time.perf_counter() - t
        t = time.perf_counter()
        child.observe()
        t_obs += time.perf_counter() - t
    return t_obs / (t_obs + t_train)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--env-steps", type=int, default=20)
    parser.add_argument("--subsets", default="64,128,all")
    args = parser.parse_args()
    torch.set_num_threads(1)
    preamble("env step vs bare PyTorch loop (digits, mlp, batch 32, action_every 10)", args.device)
    rows = []
    for size in args.subsets.split(","):
        base = {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": 100_000, "device": args.device}
        data = load_task_data(config_from_dict({"task": base}).task).to(args.device)
        subset = data.val_x.shape[0] if size == "all" else int(size)
        env_config = {"task": {**base, "val_subset": subset}, "controller": {"action_every": 10}}
        task = config_from_dict(env_config).task
        every = 10
        bare_loop(task, data, every, 2)
        bare_rates, shares = [], []
        env_rates = {}
        envs = make_envs(env_config, data)
        for _, env, _ in envs:
            env.reset(seed=0)
        for _ in range(args.repeats):
            for name, env, keep in envs:
                env_rates.setdefault(name, []).append(
                    args.env_steps / timed(lambda: [env.step(keep) for _ in range(args.env_steps)]))
            bare_rates.append(args.env_steps / timed(lambda: bare_loop(task, data, every, args.env_steps)))
            shares.append(100 * observe_share(task, data, every, args.env_steps))
        for name, rates in env_rates.items():
            ratios = [e / b for e, b in zip(rates, bare_rates)]
            rows.append([f"{subset}" + (" (all)" if size == "all" else ""), name, fmt(spread(rates)),
                         fmt(spread(bare_rates)), fmt(spread(ratios), 2), fmt(spread(shares))])
    print(table(["val subset", "env", "env-steps/s", "bare loop env-steps/s", "env / bare",
                 "observe share of env time %"], rows))
    print("[lrservice] figures: median [min-max] over repeats; target env / bare >= 0.9 with features included")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
