"""Helpers shared by test modules (import: ``from helpers import ...``; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def record_child(spec: dict, restore_dir=None, on_checkpoint=None) -> list[dict]:
    """Run a one-child compare trial without Tune; its rows as the tables get them.

    ``on_checkpoint(step, directory)`` sees every checkpoint the trial saves (valid during the call)."""
    from lrservice.compare.trainable import child_reports, run_trial

    reports: list[dict] = []

    def report(metrics, directory):
        reports.append(dict(metrics))
        if directory is not None and on_checkpoint is not None:
            on_checkpoint(metrics["step"], directory)

    run_trial(spec, report, restore_dir=restore_dir)
    return child_reports(reports)[0]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc (no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


ANCHORED = {"features": "anchored", "factors": [0.5, 2.0], "action_every": 10, "lr_min": 1e-5, "lr_max": 0.1}
HALF = -0.6931471805599453  # log(1/2)


def linear_controller(path: Path, controller: dict, weight, bias):
    """A hand-made exported controller, one linear layer (``weight``, ``bias``) over its feature row with an
    identity normaliser, saved to ``path`` and loaded: its decisions are known in advance."""
    import torch

    from lrservice.control.checkpoint import EXPORT_FORMAT, EXPORT_VERSION
    from lrservice.control.controller import LearnedController

    n = weight.shape[1]
    payload = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
               "task": {"dataset": "digits", "model": "mlp"}, "controller": controller, "features": [],
               "normaliser": {"mean": torch.zeros(n, dtype=torch.float64), "std": torch.ones(n, dtype=torch.float64),
                              "clip": 10.0, "eps": 0.0, "count": 0},
               "policy": {"activation": "tanh", "layers": [{"weight": weight, "bias": bias}]},
               "training": {"iteration": 0, "env_steps": 0.0, "child_steps": 0.0, "episodes": 0.0}}
    torch.save(payload, path)
    return LearnedController.from_checkpoint(path)


def anchored_controller(path: Path):
    """An exported ``anchored``-features controller that doubles the LR until the validation loss is half
    its first observation's, and halves it from then on.

    One linear layer over (progress, log10 LR, log val/train, log change ratio, log val/first val) with an
    identity normaliser: logits ``(-20 (a - log 1/2), 20 (a - log 1/2))`` for the factors (0.5, 2.0),
    ``a`` the last column, so the decision rests on the anchor alone.
    """
    import torch

    weight = torch.zeros(2, 5)
    weight[0, 4], weight[1, 4] = -20.0, 20.0
    return linear_controller(path, ANCHORED, weight, torch.tensor([20.0 * HALF, -20.0 * HALF]))
