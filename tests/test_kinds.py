"""The arm-kind registry and the modern kinds, each checked against an independent reference.

Schedules: the LR every step of a real trial uses (``run_trial`` with a row per step) against
a closed-form formula written out here (warmup + cosine, WSD, linear, torch's documented
OneCycle algorithm), and the batched pool's step -> LR function against the same trial.
Optimizers: Schedule-Free AdamW and Prodigy stepped by hand on the same model and batches,
compared with what the trial produced.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import record_child

from lrservice.child.models import build_model
from lrservice.child.trainer import load_task_data
from lrservice.compare.arms import trial_spec, validate_compare
from lrservice.config import ArmConfig, ConfigError, RunConfig, TaskConfig, config_from_dict
from lrservice.kinds import ArmKind, Param, baselines, get_kind, kinds

STEPS = 40
TASK = TaskConfig(dataset="digits", model="mlp", batch_size=32, steps=STEPS, eval_every=1, optimizer="sgd",
                  val_subset=64)


def _spec(task: TaskConfig, kind: str, params: dict, seed: int = 0) -> dict:
    config = RunConfig(task=task)
    config = dataclasses.replace(config, compare=dataclasses.replace(config.compare, checkpoint_every=1000))
    return trial_spec(config, "run-test", "eval", ArmConfig(kind, kind), [(params, seed)])


def _trial_lrs(kind: str, params: dict, task: TaskConfig = TASK) -> list[float]:
    rows = record_child(_spec(task, kind, params))
    assert [r["step"] for r in rows] == list(range(1, task.steps + 1))
    return [r["lr"] for r in rows]


def _warmup_cosine(t, lr, w, total, start=0.01, eta_min=0.0):
    if t < w:
        return lr * (start + (1 - start) * t / w)
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * (t - w) / (total - w))) / 2


def _wsd(t, lr, w, d, total, shape, start=0.01):
    if t < w:
        return lr * (start + (1 - start) * t / w)
    q = min(max(t - (total - d), 0) / d, 1.0)
    return lr * (1 - (q if shape == "linear" else math.sqrt(q)))


def _linear(t, lr, w, total, start=0.01):
    if t < w:
        return lr * (start + (1 - start) * t / w)
    return lr * (1 - (t - w) / (total - w))


def _onecycle(t, lr, total, pct=0.3, div=25.0, final_div=1e4):
    """torch's documented algorithm (two phases, cosine annealing) written out."""
    initial, low = lr / div, lr / div / final_div
    first_end = float(pct * total) - 1
    if t <= first_end:
        start, end, frac = initial, lr, t / first_end
    else:
        start, end, frac = lr, low, (t - first_end) / (total - 1 - first_end)
    return end + (start - end) / 2 * (1 + math.cos(math.pi * frac))


@pytest.mark.parametrize("kind,params,reference", [
    ("warmup_cosine", {"lr": 0.05, "warmup": 8}, lambda t: _warmup_cosine(t, 0.05, 8, STEPS)),
    ("warmup_cosine", {"lr": 0.05, "warmup": 0.25, "eta_min": 0.001},
     lambda t: _warmup_cosine(t, 0.05, 10, STEPS, eta_min=0.001)),
    ("warmup_cosine", {"lr": 0.05, "warmup": 0}, lambda t: _warmup_cosine(t, 0.05, 0, STEPS)),
    ("wsd", {"lr": 0.05, "warmup": 4, "decay": 0.25, "shape": "sqrt"}, lambda t: _wsd(t, 0.05, 4, 10, STEPS, "sqrt")),
    ("wsd", {"lr": 0.05, "warmup": 0, "decay": 0.5, "shape": "linear"}, lambda t: _wsd(t, 0.05, 0, 20, STEPS,
                                                                                       "linear")),
    ("linear", {"lr": 0.05}, lambda t: _linear(t, 0.05, 0, STEPS)),
    ("linear", {"lr": 0.05, "warmup": 5}, lambda t: _linear(t, 0.05, 5, STEPS)),
    ("onecycle", {"lr": 0.05}, lambda t: _onecycle(t, 0.05, STEPS)),
])
def test_schedule_kind_lr_every_step_equals_the_formula(kind, params, reference):
    lrs = _trial_lrs(kind, params)
    expected = [reference(t) for t in range(STEPS)]
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # the batched pool's step -> LR function gives the same values
    k = get_kind(kind)
    fn = k.lr_fn(k.resolve(params, RunConfig(task=TASK)), STEPS)
    assert [fn(t) for t in range(STEPS)] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_wsd_hand_values():
    """Three points by hand: T=100, warmup 10, decay 20 steps from step 80."""
    k = get_kind("wsd")
    p = k.full({"lr": 0.1, "warmup": 10, "decay": 0.2, "total_steps": 100, "shape": "sqrt"})
    assert k.factor(p, 5) == pytest.approx(0.01 + 0.99 * 0.5)
    assert k.factor(p, 50) == 1.0
    assert k.factor(p, 85) == pytest.approx(0.5)  # 1 - sqrt(5 / 20)
    assert k.factor({**p, "shape": "linear"}, 85) == pytest.approx(0.75)


def _hand_run(task: TaskConfig, seed: int, make_opt, lr_at, eval_every: int):
    """The child trained by hand: its seed's weights, its batch order, ``make_opt(params)``, LR ``lr_at(t)``
    (None: leave it), a schedule-free ``eval()`` before each evaluation; returns the last val loss."""
    data = load_task_data(task)
    torch.manual_seed(seed)
    model = build_model(task.model, data.input_shape, data.num_classes)
    opt = make_opt(model.parameters())
    gen = torch.Generator().manual_seed(seed + 1_000_003)
    n = data.train_x.shape[0]
    order, cursor, val = torch.empty(0, dtype=torch.int64), 0, None
    vx, vy = data.split("val", task.val_subset)
    for t in range(task.steps):
        if cursor + task.batch_size > len(order):
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor:cursor + task.batch_size]
        cursor += task.batch_size
        if hasattr(opt, "train"):
            opt.train()
        if lr_at is not None:
            for g in opt.param_groups:
                g["lr"] = lr_at(t)
        model.train()
        loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (t + 1) % eval_every == 0:
            if hasattr(opt, "eval"):
                opt.eval()
            model.eval()
            with torch.no_grad():
                val = float(F.cross_entropy(model(vx), vy))
    return val, model


def test_schedule_free_trial_equals_the_package_stepped_by_hand():
    from schedulefree import AdamWScheduleFree

    task = dataclasses.replace(TASK, optimizer="adam", eval_every=10)
    rows = record_child(_spec(task, "schedule_free", {"lr": 0.01, "warmup": 0.25}))
    hand, _ = _hand_run(task, 0, lambda ps: AdamWScheduleFree(ps, lr=0.01, warmup_steps=10), None, 10)
    assert rows[-1]["val_loss"] == pytest.approx(hand, rel=1e-6)
    # the switch matters: the training point y is not the evaluation point x
    y_loss, model = _hand_run(task, 0, lambda ps: AdamWScheduleFree(ps, lr=0.01, warmup_steps=10), None, 10 ** 9)
    assert y_loss is None  # never evaluated: the model holds y
    data = load_task_data(task)
    vx, vy = data.split("val", task.val_subset)
    with torch.no_grad():
        at_y = float(F.cross_entropy(model.eval()(vx), vy))
    assert abs(at_y - hand) > 1e-4
    assert [r["lr"] for r in rows][:1] == pytest.approx([0.01 * 10 / 10])  # step 10 ends the warmup


def test_prodigy_trial_equals_the_package_stepped_by_hand():
    from prodigyopt import Prodigy

    task = dataclasses.replace(TASK, optimizer="adam", eval_every=10)
    for schedule, lr_at in (("constant", None), ("cosine", lambda t: (1 + math.cos(math.pi * t / STEPS)) / 2)):
        rows = record_child(_spec(task, "prodigy", {"schedule": schedule}))
        hand, _ = _hand_run(task, 0, lambda ps: Prodigy(ps, lr=1.0), lr_at, 10)
        assert rows[-1]["val_loss"] == pytest.approx(hand, rel=1e-5), schedule
        assert rows[-1]["lr"] > 0  # d x lr: Prodigy's step size, not the multiplier


def test_registry_flags_and_user_kinds(tmp_path, monkeypatch):
    assert {"constant", "cosine", "warmup_cosine", "wsd", "onecycle", "linear", "schedule_free", "prodigy"} <= set(
        baselines())
    assert not {"controller", "pbt", "policy"} & set(baselines())
    assert not get_kind("schedule_free").batchable and get_kind("wsd").batchable
    (tmp_path / "mykinds.py").write_text(
        "from lrservice.kinds import ArmKind, Param\n"
        "class Halving(ArmKind):\n"
        "    name = 'halving'\n"
        "    baseline = True\n"
        "    params = {'lr': Param(), 'every': Param(10, 'steps')}\n"
        "    def factor(self, p, step):\n"
        "        return 0.5 ** (step // p['every'])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    lrs = _trial_lrs("mykinds:Halving", {"lr": 0.08, "every": 10})
    assert lrs == pytest.approx([0.08 * 0.5 ** (t // 10) for t in range(STEPS)], rel=1e-12)
    assert isinstance(get_kind("mykinds:Halving"), ArmKind) and isinstance(Param(), Param)
    with pytest.raises(ConfigError, match=r"^compare.arms\[0\].kind: 'mykinds:Nope' cannot be loaded"):
        config_from_dict({"compare": {"arms": [{"name": "a", "kind": "mykinds:Nope"}]}})


@pytest.mark.parametrize("arm,field", [
    ({"kind": "warmup_cosine", "params": {"lr": 0.01, "warmup": 40}}, r"compare.arms\[0\].params.warmup: 40"),
    ({"kind": "warmup_cosine", "params": {"lr": 0.01, "warmup": 1.5}}, r"compare.arms\[0\].params.warmup: 1.5"),
    ({"kind": "warmup_cosine", "params": {}}, r"compare.arms\[0\].params.lr: required"),
    ({"kind": "wsd", "params": {"lr": 0.01, "shape": "cube"}}, r"compare.arms\[0\].params.shape: 'cube'"),
    ({"kind": "wsd", "params": {"lr": 0.01, "warmup": 0.5, "decay": 0.6}}, r"compare.arms\[0\].params.decay: 0.6"),
    ({"kind": "onecycle", "grid": {"lr": [0.01, -1]}}, r"compare.arms\[0\].params.lr: -1"),
    ({"kind": "linear", "params": {"lr": 0.01, "eta": 0}}, r"compare.arms\[0\].params.eta: unknown key"),
    ({"kind": "schedule_free", "params": {"lr": 0.01, "beta1": 1.0}}, r"compare.arms\[0\].params.beta1: 1.0"),
    ({"kind": "prodigy", "params": {"d_coef": 0}}, r"compare.arms\[0\].params.d_coef: 0"),
    ({"kind": "cyclic", "params": {"base_lr": 0.1, "max_lr": 0.01, "step_size_up": 5}},
     r"compare.arms\[0\].params.max_lr"),
])
def test_bad_params_name_the_field(arm, field):
    config = config_from_dict({"task": {"steps": STEPS, "eval_every": 10},
                               "compare": {"arms": [{"name": "a", **arm}]}})
    with pytest.raises(ConfigError, match="^" + field):
        validate_compare(config)


def test_the_registry_imports_without_torch():
    code = "import sys, lrservice.kinds, lrservice.config; print('torch' in sys.modules, len(lrservice.kinds.kinds()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", str(len(kinds()))]


def test_the_tuning_rule_scores_every_point_and_picks_the_first_lowest():
    """One rule for compare's tune phase and evaluate-controller's rivals: mean over tune seeds, a diverged
    or missing loss +inf, ties to the first point seen."""
    from lrservice.kinds import grid_scores, tuned_winners

    rows = [{"arm": "c", "params": {"lr": lr}, "final_val_loss": loss, "diverged": diverged}
            for lr, loss, diverged in [(0.1, 0.5, False), (0.1, 0.25, False), (0.01, 0.375, False),
                                       (0.01, 0.375, False), (1.0, 0.0, True), (1.0, 0.0, False),
                                       (0.001, None, False), (0.001, 0.1, False)]]
    rows.append({"arm": "k", "params": {"lr": 0.5}, "final_val_loss": float("nan")})
    assert grid_scores(rows) == {"c": [({"lr": 0.1}, 0.375), ({"lr": 0.01}, 0.375), ({"lr": 1.0}, float("inf")),
                                       ({"lr": 0.001}, float("inf"))],
                                 "k": [({"lr": 0.5}, float("inf"))]}
    assert tuned_winners(rows) == {"c": ({"lr": 0.1}, 0.375), "k": ({"lr": 0.5}, float("inf"))}
    assert tuned_winners(list(reversed(rows)))["c"] == ({"lr": 0.01}, 0.375)  # ties: the first seen


def test_a_controller_arm_naming_no_checkpoint_runs_the_shipped_general_controller(tmp_path):
    from lrservice.compare.experiment import ensure_controllers
    from lrservice.control.checkpoint import load_export, pretrained_controllers

    config = config_from_dict({"compare": {"arms": [{"name": "ctrl", "kind": "controller", "params": {"lr": 1e-3}},
                                                    {"name": "cos", "kind": "cosine", "params": {"lr": 1e-3}}]}})
    assert get_kind("controller").resolve({"lr": 1e-3}, config)["checkpoint"] == "pretrained:general"
    lines = []
    arms = ensure_controllers(config, tmp_path, resume=False, log=lines.append).compare.arms
    assert arms[0].params == {"lr": 1e-3, "checkpoint": str(pretrained_controllers()["general"])}
    assert arms[1].params == {"lr": 1e-3} and not lines  # nothing trained
    shipped = load_export(arms[0].params["checkpoint"])
    assert len(shipped["selection"]["tasks"]) == len(shipped["controller"]["tasks"]) > 1  # trained on a suite
