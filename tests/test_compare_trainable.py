"""The comparison trial loop (lrservice.compare.trainable.run_trial), checked against references.

These call the trial loop directly with a recording report callback (no Tune), so the
LR trajectory can be compared step by step with torch's schedulers driven by hand.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from lrservice.compare.arms import trial_spec
from lrservice.compare.trainable import run_trial
from lrservice.config import ArmConfig, RunConfig, TaskConfig


def _spec(task: TaskConfig, kind: str, params: dict, seed: int = 0, checkpoint_every: int = 1000) -> dict:
    config = RunConfig(task=task)
    config = dataclasses.replace(config, compare=dataclasses.replace(config.compare, checkpoint_every=checkpoint_every))
    return trial_spec(config, "run-test", "eval", ArmConfig(kind, kind), params, seed)


def _record(spec: dict, **kwargs) -> list[dict]:
    rows: list[dict] = []
    run_trial(spec, lambda metrics, directory: rows.append(dict(metrics)), **kwargs)
    return rows


def _torch_lrs(make_scheduler, lr: float, steps: int) -> list[float]:
    """The LR each of ``steps`` optimizer steps uses, from torch's scheduler stepped by hand."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("kind,params,reference", [
    ("step", {"lr": 0.05, "step_size": 7, "gamma": 0.5},
     lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5)),
    ("cosine", {"lr": 0.05, "total_steps": 30},
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30, eta_min=0.0)),
    ("cyclic", {"base_lr": 0.001, "max_lr": 0.05, "step_size_up": 6},
     lambda o: torch.optim.lr_scheduler.CyclicLR(o, base_lr=0.001, max_lr=0.05, step_size_up=6, cycle_momentum=False)),
])
def test_baseline_lr_trajectory_equals_torch_scheduler(kind, params, reference):
    task = TaskConfig(dataset="digits", model="mlp", batch_size=32, steps=30, eval_every=1, optimizer="sgd",
                      val_subset=64)
    rows = _record(_spec(task, kind, params))
    assert [r["step"] for r in rows] == list(range(1, 31))
    expected = _torch_lrs(reference, params.get("lr", params.get("base_lr")), 30)
    assert [r["lr"] for r in rows] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert rows[-1]["final"] and not any(r["final"] for r in rows[:-1])


def test_policy_lr_trajectory_equals_policy_function():
    from lrservice.schedules import policy_from_dict

    policy = {"compose": [{"name": "FIX", "k0": 0.01}, {"name": "COS", "k0": 0.0, "k1": 0.01, "l": 15}],
              "boundaries": [10]}
    task = TaskConfig(dataset="digits", model="mlp", batch_size=32, steps=25, eval_every=1, val_subset=64)
    rows = _record(_spec(task, "policy", policy))
    fn = policy_from_dict(policy)
    assert [r["lr"] for r in rows] == pytest.approx([fn(t) for t in range(25)], rel=1e-12, abs=1e-15)


def test_rows_every_eval_and_final_metrics(tiny_task):
    task = dataclasses.replace(tiny_task, steps=60, eval_every=20)
    rows = _record(_spec(task, "constant", {"lr": 3e-3}, seed=3))
    assert [r["step"] for r in rows] == [20, 40, 60]
    final = rows[-1]
    assert final["steps_done"] == 60 and final["diverged"] is False
    assert 0 <= final["test_accuracy"] <= final["top5_accuracy"] <= 1
    assert final["target_accuracy"] == RunConfig().compare.target_accuracy
    elapsed = [r["elapsed_s"] for r in rows]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0


def test_restore_from_checkpoint_continues_identically(tiny_task, tmp_path):
    """A trial resumed from its step-40 checkpoint reports the same rows as the uninterrupted one."""
    task = dataclasses.replace(tiny_task, steps=100, eval_every=20)
    spec = _spec(task, "cyclic", {"base_lr": 1e-4, "max_lr": 1e-2, "step_size_up": 30}, seed=5, checkpoint_every=40)
    saved = {}
    rows: list[dict] = []

    def report(metrics, directory):
        rows.append(dict(metrics))
        if directory is not None:
            saved[metrics["step"]] = shutil.copytree(directory, tmp_path / f"ckpt-{metrics['step']}")

    run_trial(spec, report)
    assert sorted(saved) == [40, 80, 100]  # every 40 steps and at the end
    resumed = _record(spec, restore_dir=saved[40])
    assert [r["step"] for r in resumed] == [60, 80, 100]
    keys = ("train_loss", "val_loss", "val_accuracy", "lr", "test_loss", "test_accuracy")
    for a, b in zip(rows[2:], resumed):
        for key in keys:
            if key in a:
                assert a[key] == b[key], (a["step"], key)


def test_diverged_child_ends_cleanly():
    task = TaskConfig(dataset="digits", model="mlp", batch_size=32, steps=100, eval_every=10, optimizer="sgd",
                      val_subset=64)
    rows = _record(_spec(task, "constant", {"lr": 1000.0}))
    final = rows[-1]
    assert final["final"] and final["diverged"] is True
    assert final["steps_done"] < 100


class _ScaleUp:
    """A stand-in with LearnedController's acting API: multiply the LR by 1.05 at every action."""

    action_every = 5

    def __init__(self):
        self.calls = []

    def next_lr(self, features, lr, progress=None):
        self.calls.append((features.copy(), lr, progress))
        return lr * 1.05


def test_controller_arm_acts_every_action_every_steps(tiny_task):
    from lrservice.compare import trainable

    ctrl = _ScaleUp()
    trainable._CONTROLLER_CACHE["stand-in"] = ctrl
    try:
        task = dataclasses.replace(tiny_task, steps=30, eval_every=10)
        rows = _record(_spec(task, "controller", {"checkpoint": "stand-in", "lr": 0.002}))
    finally:
        trainable._CONTROLLER_CACHE.pop("stand-in")
    assert len(ctrl.calls) == 30 // 5  # at steps 0, 5, ..., 25: before every block, as in training episodes
    # the LR used by step t is 0.002 * 1.05 ** (floor((t - 1) / 5) + 1)
    assert [r["lr"] for r in rows] == pytest.approx([0.002 * 1.05 ** ((t - 1) // 5 + 1) for t in (10, 20, 30)])
    for i, (features, lr, progress) in enumerate(ctrl.calls):
        assert features.shape == (7,) and lr == pytest.approx(0.002 * 1.05 ** i)
        assert features[6] == pytest.approx(lr, rel=1e-6)  # the LR feature is the LR in force
        assert progress == pytest.approx(5 * i / 30)  # time-aware controllers see the fraction done
