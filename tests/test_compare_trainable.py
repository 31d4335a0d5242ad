"""The comparison trial loop (lrservice.compare.trainable.run_trial), checked against references.

These call the trial loop directly with a recording report callback (no Tune), so the
LR trajectory can be compared step by step with torch's schedulers driven by hand, and a
trial of several children against the same children trained one by one.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from lrservice.compare.arms import trial_spec
from lrservice.compare.trainable import child_reports, child_share, run_trial
from lrservice.config import ArmConfig, RunConfig, TaskConfig


def _spec(task: TaskConfig, kind: str, params: dict, seed: int = 0, checkpoint_every: int = 1000,
          children: list | None = None) -> dict:
    config = RunConfig(task=task)
    config = dataclasses.replace(config, compare=dataclasses.replace(config.compare, checkpoint_every=checkpoint_every))
    return trial_spec(config, "run-test", "eval", ArmConfig(kind, kind), children or [(params, seed)])


def _record_all(spec: dict, **kwargs) -> dict[int, list[dict]]:
    """Each child's rows, as the tables get them from the trial's reports."""
    reports: list[dict] = []
    run_trial(spec, lambda metrics, directory: reports.append(dict(metrics)), **kwargs)
    return child_reports(reports)


def _record(spec: dict, **kwargs) -> list[dict]:
    return _record_all(spec, **kwargs)[0]


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
    reports: list[dict] = []

    def report(metrics, directory):
        reports.append(dict(metrics))
        if directory is not None:
            saved[metrics["step"]] = shutil.copytree(directory, tmp_path / f"ckpt-{metrics['step']}")

    run_trial(spec, report)
    rows = child_reports(reports)[0]
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
    """A stand-in with LearnedController's acting API (the interface ``ArmKind.controller`` names): multiply
    the LR by 1.05 at every action.

    Every child gets its own copy of a trial's controller; the calls go to one shared list."""

    action_every = 5
    calls: list = []

    def next_lr(self, features, lr, progress=None):
        self.calls.append((features.copy(), lr, progress))
        return lr * 1.05

    def reset(self):  # nothing kept between decisions
        pass

    def run_state(self):
        return {}

    def load_run_state(self, state):
        pass


def test_controller_arm_acts_every_action_every_steps(tiny_task):
    from lrservice.compare import trainable

    ctrl = _ScaleUp()
    ctrl.calls.clear()
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


def test_a_trial_of_children_equals_each_child_alone(tiny_task):
    """Three seeds and two LRs in one trial (one pool) give each child the rows it gets alone."""
    task = dataclasses.replace(tiny_task, steps=40, eval_every=20, optimizer="sgd")
    children = [({"lr": lr}, seed) for lr in (0.01, 0.05) for seed in (1, 2, 3)]
    together = _record_all(_spec(task, "constant", {}, children=children))
    assert sorted(together) == list(range(len(children)))
    for i, (params, seed) in enumerate(children):
        alone = _record(_spec(task, "constant", params, seed=seed))
        assert [r["step"] for r in together[i]] == [r["step"] for r in alone] == [20, 40]
        assert together[i][-1]["seed"] == seed and together[i][-1]["final"]
        for a, b in zip(together[i], alone):
            for key in ("train_loss", "val_loss", "val_accuracy", "lr", "test_loss"):
                if key in b:
                    assert a[key] == pytest.approx(b[key], rel=1e-5), (i, key)


def test_a_diverging_child_stops_and_the_others_go_on():
    task = TaskConfig(dataset="digits", model="mlp", batch_size=32, steps=60, eval_every=10, optimizer="sgd",
                      val_subset=64)
    rows = _record_all(_spec(task, "constant", {}, children=[({"lr": 1000.0}, 0), ({"lr": 0.01}, 0)]))
    bad, good = rows[0], rows[1]
    assert bad[-1]["final"] and bad[-1]["diverged"] and bad[-1]["steps_done"] < 60
    assert sum(r["final"] for r in bad) == 1 and len(bad) < len(good)
    assert good[-1]["final"] and not good[-1]["diverged"] and [r["step"] for r in good] == list(range(10, 61, 10))


def test_restore_of_a_batched_trial_continues_every_child_identically(tiny_task, tmp_path):
    task = dataclasses.replace(tiny_task, steps=60, eval_every=20)
    children = [({"lr": 3e-3, "total_steps": 60}, seed) for seed in (4, 5, 6)]
    spec = _spec(task, "cosine", {}, children=children, checkpoint_every=20)
    saved, reports = {}, []

    def report(metrics, directory):
        reports.append(dict(metrics))
        if directory is not None:
            saved[metrics["step"]] = shutil.copytree(directory, tmp_path / f"ckpt-{metrics['step']}")

    run_trial(spec, report)
    whole = child_reports(reports)
    resumed = _record_all(spec, restore_dir=saved[20])
    for i in range(3):
        assert [r["step"] for r in resumed[i]] == [40, 60]
        for a, b in zip(whole[i][1:], resumed[i]):
            timing = ("elapsed_s", "seconds_to_target")
            assert {k: a[k] for k in b if k not in timing} == {k: b[k] for k in b if k not in timing}


def test_child_share_splits_the_trial_seconds_over_its_children():
    """A batch of K children trained as one pool: each child is charged the trial's seconds over K."""
    reports = [{"time_total_s": 1.5}, {"time_total_s": 6.0}, {}]  # the latest total; a report may lack it
    assert child_share(reports, 4) == 6.0 / 4
    assert child_share([{}], 3) == 0.0
