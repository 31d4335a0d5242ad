"""Child training speed per model on the current device: steps/s for the paper's task sizes.

Synthetic data of each dataset's shape (no download needed), ChildTrainer as used everywhere:

    python bench/child_gpu.py --device cuda --steps 200
"""

from __future__ import annotations

import argparse
import time

import torch

from lrservice.child.data import ChildData
from lrservice.child.trainer import ChildTrainer
from lrservice.config import TaskConfig

SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
CASES = [("mnist", "mlp", 128), ("mnist", "lenet5", 128), ("cifar10", "resnet18", 128)]


def synthetic(name: str, n: int = 10_000) -> ChildData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *SHAPES[name], generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return ChildData(name, x, y, x[:1000], y[:1000], x[:1000], y[:1000], 10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"[lrservice] device {args.device} ({name}), torch {torch.__version__}")
    print("dataset shape | model | batch | child steps/s | s per 1000 steps | observe() ms")
    for dataset, model, batch in CASES:
        task = TaskConfig(dataset="digits", model=model, batch_size=batch, val_subset=512, device=args.device)
        trainer = ChildTrainer(task, data=synthetic(dataset))
        trainer.reset(1e-3, seed=0)
        trainer.train_steps(20)
        trainer.observe()
        if args.device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        trainer.train_steps(args.steps)
        if args.device == "cuda":
            torch.cuda.synchronize()
        rate = args.steps / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(10):
            trainer.observe()
        obs_ms = (time.perf_counter() - t) * 100
        print(f"{dataset} {SHAPES[dataset]} | {model} | {batch} | {rate:.1f} | {1000 / rate:.1f} | {obs_ms:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
