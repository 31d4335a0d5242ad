"""A controller in a user's own loop plays exactly the policy training and evaluation play (issue 24).

The same digits-MLP child (``torch.manual_seed(seed)`` then ``build_model``, ChildTrainer's
batch order) runs three ways with ``pretrained:digits-mlp``: a plain torch loop with
``ControllerScheduler``, ``evaluate-controller``'s ``run_controller`` and a compare controller
arm (``run_trial``). Over a separate-children pool the own loop and ``run_controller`` execute
the same float32 operations in the same order on the same tensors in one process, so the LR at
every step and the final validation loss must agree exactly; the compare arm and
``run_controller``'s default both train in the batched pool and agree exactly with each other;
the batched pool reorders operations against the own loop and is compared over a short run.
A conv net lrservice does not know checks where decisions happen with a controller whose
decisions are known in advance, and the own-loop example in docs/controller.md is executed as written.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import linear_controller, record_child

from lrservice.child.models import build_model
from lrservice.child.pool import SeparateChildren
from lrservice.child.trainer import load_task_data
from lrservice.compare.arms import trial_spec
from lrservice.config import ArmConfig, RunConfig, config_from_dict
from lrservice.control.controller import ChildObserver, ControllerScheduler, LearnedController
from lrservice.control.evaluate import run_controller

PRETRAINED = "pretrained:digits-mlp"
SEED = 0
ROOT = Path(__file__).resolve().parents[1]


def _task(steps: int):
    """The pretrained controller's task (digits, MLP, Adam, batch 32, val_subset 256) on CPU; a row every step."""
    shipped = LearnedController.from_checkpoint(PRETRAINED).task
    return config_from_dict({"task": {"dataset": shipped.dataset, "model": shipped.model, "optimizer": "adam",
                                      "batch_size": shipped.batch_size, "steps": steps,
                                      "val_subset": shipped.val_subset, "device": "cpu", "eval_every": 1}}).task


def _own_loop(task, data, initial_lr: float, seed: int, ctrl=None) -> tuple[list[float], float]:
    """A user's plain torch loop: the LR each step trains with, and the final validation loss."""
    torch.manual_seed(seed)  # ChildTrainer.reset's weights
    model = build_model(task.model, data.input_shape, data.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=initial_lr)
    ctrl = ctrl or LearnedController.from_checkpoint(PRETRAINED)
    observer = ChildObserver(model, *data.split("val_subset", task.val_subset), optimizer)
    scheduler = ControllerScheduler(optimizer, ctrl, observer, total_steps=task.steps)
    batches = torch.Generator().manual_seed(seed + 1_000_003)  # ChildTrainer's batch order: epoch permutations
    order, cursor, lrs = torch.empty(0, dtype=torch.int64), 0, []
    for _ in range(task.steps):
        if cursor + task.batch_size > len(order):
            order, cursor = torch.randperm(len(data.train_x), generator=batches), 0
        idx = order[cursor:cursor + task.batch_size]
        cursor += task.batch_size
        lrs.append(optimizer.param_groups[0]["lr"])
        loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        observer.record(loss.item())
        scheduler.step()
    model.eval()
    with torch.no_grad():
        return lrs, float(F.cross_entropy(model(data.val_x), data.val_y))


def _per_step(run, steps: int) -> list[float]:
    """run_controller's LR per decision block, as the LR of every step."""
    return [run.lrs[s // run.lr_every] for s in range(steps)]


@pytest.mark.parametrize("initial_lr", [1e-2, 1e-3, 1e-4])
def test_own_loop_evaluate_and_compare_arm_play_the_same_run(initial_lr):
    task = _task(600)
    data = load_task_data(task)
    own_lrs, own_val = _own_loop(task, data, initial_lr, SEED)

    ctrl = LearnedController.from_checkpoint(PRETRAINED)
    separate = lambda tk, k: SeparateChildren(tk, k, data=data)  # noqa: E731 - the exact-arithmetic pool
    evaluated = run_controller(ctrl, task, data, [(initial_lr, SEED)], pool_factory=separate)[0]
    assert own_lrs == _per_step(evaluated, task.steps)
    assert own_val == evaluated.val_loss

    # the compare arm trains its children as one batched pool, as evaluate-controller does by default:
    # the same pool, the same decisions, the same run
    batched = run_controller(ctrl, task, data, [(initial_lr, SEED)])[0]
    config = RunConfig(task=task)
    spec = trial_spec(config, "own-loop", "eval", ArmConfig("ctrl", "controller"),
                      [({"checkpoint": PRETRAINED, "lr": initial_lr}, SEED)])
    rows = record_child(spec)
    assert [r["step"] for r in rows] == list(range(1, task.steps + 1))  # the row after step s has the LR step s used
    assert _per_step(batched, task.steps) == [r["lr"] for r in rows]
    assert batched.val_loss == rows[-1]["val_loss"]


@pytest.mark.parametrize("initial_lr", [1e-2, 1e-3, 1e-4])
def test_own_loop_matches_the_batched_evaluation_over_a_short_run(initial_lr):
    """evaluate-controller's default pool (batched) over 30 steps, decisions at 0, 10 and 20.

    Batched and separate children differ in float32 rounding order only; over the first tens
    of steps that leaves features and losses within ~1e-6 relative (tests/test_batched.py
    measures <= 1e-6 after 10 steps and allows 1e-4). The actor's top two logits are more than
    1e-3 apart at these decisions (checked below), far above what a 1e-6 change of its
    normalised inputs moves them, so the argmax and hence every LR agree exactly, and the
    final validation loss agrees within the batched contract's rtol 1e-4. Over 600 steps
    chaos amplifies the rounding (1 % apart in final loss for some seeds), which is why the
    full-length comparison above uses the separate-children pool.
    """
    task = _task(30)
    data = load_task_data(task)
    ctrl = LearnedController.from_checkpoint(PRETRAINED)
    outputs, actions = [], ctrl.actions

    def recording(rows):
        outputs.append(np.sort(ctrl._outputs(rows).numpy()[0]))
        return actions(rows)

    ctrl.actions = recording
    own_lrs, own_val = _own_loop(task, data, initial_lr, SEED, ctrl)
    batched = run_controller(LearnedController.from_checkpoint(PRETRAINED), task, data, [(initial_lr, SEED)])[0]

    margins = [float(top[-1] - top[-2]) for top in outputs]
    assert len(margins) == 3 and min(margins) > 1e-3, margins  # what the exact LR check below rests on
    assert own_lrs == _per_step(batched, task.steps)
    assert own_val == pytest.approx(batched.val_loss, rel=1e-4)




class SmallConvNet(torch.nn.Module):
    """A model lrservice does not define: no ``head`` attribute, so the observer uses its last Linear."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.MaxPool2d(2), torch.nn.Flatten())
        self.classifier = torch.nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        return self.classifier(self.features(x))


TIMED = {"features": "invariant", "envelope": "cosine", "factors": [0.5, 2.0], "action_every": 10,
         "lr_min": 1e-5, "lr_max": 0.1}


def _timed_controller(path: Path, warmup: float = 0.0) -> LearnedController:
    """An exported controller that doubles its level before half-time and halves it after.

    One linear layer over (progress, log10 LR, log val/train, log change ratio, log10 level)
    with an identity normaliser: logits ``(20 p - 10, 10 - 20 p)`` for the factors (0.5, 2.0);
    its envelope warms up over ``warmup`` of the run.
    """
    weight = torch.zeros(2, 5)
    weight[0, 0], weight[1, 0] = 20.0, -20.0
    return linear_controller(path, {**TIMED, "envelope_warmup": warmup}, weight, torch.tensor([-10.0, 10.0]))


def _envelope_by_hand(p: float, warmup: float) -> float:
    """The cosine envelope at progress ``p``, after a linear warmup from 0.1 over ``warmup`` of the run."""
    if p < warmup:
        return 0.1 + 0.9 * p / warmup
    return (1 + math.cos(math.pi * (p - warmup) / (1 - warmup))) / 2


@pytest.mark.parametrize("warmup", [0.0, 0.3])
def test_scheduler_decides_at_steps_0_n_2n_on_a_model_lrservice_does_not_know(tmp_path, warmup):
    """55 steps, a decision every 10: at steps 0, 10, ..., 50 (the last block is 5 steps), none after.

    Expected LRs by hand: the level doubles at progress 0, 10/55, 20/55 and halves at 30/55,
    40/55, 50/55; each block trains at level * (1 + cos(pi * start / 55)) / 2, or with
    ``envelope_warmup`` 0.3 at level * (0.1 + 0.9 p / 0.3) while p = start / 55 < 0.3 and
    level * (1 + cos(pi (p - 0.3) / 0.7)) / 2 after. The run's initial LR is the first level either way.
    """
    ctrl = _timed_controller(tmp_path / "timed.pt", warmup)
    data = load_task_data(_task(55))
    total, initial_lr = 55, 1e-3
    torch.manual_seed(0)
    model = SmallConvNet()
    untrained = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=initial_lr, momentum=0.9)
    observer = ChildObserver(model, data.val_x[:128], data.val_y[:128], optimizer)
    assert observer.head is model.classifier
    done, seen = [0], []

    def observe():
        seen.append((done[0], observer()))
        return seen[-1][1]

    scheduler = ControllerScheduler(optimizer, ctrl, observe, total_steps=total)
    assert len(ctrl.history) == 1 and scheduler.get_lr() == scheduler.get_last_lr()  # step 0 decided once
    lrs = []
    for step in range(total + 7):  # on past the run's end: no block left, no decision
        lrs.append(optimizer.param_groups[0]["lr"])
        idx = torch.randint(len(data.train_x), (32,))
        loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        done[0] += 1
        observer.record(loss.item())
        scheduler.step()

    starts = list(range(0, total, 10))
    assert [s for s, _ in seen] == starts  # each decision observed the model after exactly that many steps
    with torch.no_grad():  # the first observation is of the untrained model, as an episode's is
        assert seen[0][1][1] == pytest.approx(float(F.cross_entropy(untrained(data.val_x[:128]), data.val_y[:128])),
                                              rel=1e-6)
    level, expected, in_force = initial_lr, [], initial_lr
    for start, (_, feats) in zip(starts, seen):
        assert feats[6] == pytest.approx(in_force, rel=1e-6)  # the LR feature is the one the last block ran at
        level *= 2.0 if start / total < 0.5 else 0.5
        in_force = level * _envelope_by_hand(start / total, warmup)
        expected += [in_force] * min(10, total - start)
    assert lrs[:total] == pytest.approx(expected, rel=1e-12)
    assert lrs[total:] == [lrs[total - 1]] * 7 and scheduler.level == pytest.approx(level, rel=1e-12)


def test_docs_own_loop_example_runs_as_written():
    """docs/controller.md's whole-run example, executed verbatim: 60 decisions in 600 steps, from step 0."""
    text = (ROOT / "docs" / "controller.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "ControllerScheduler(" in b]
    assert len(blocks) == 1
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "docs/controller.md", "exec"), namespace)
    assert re.fullmatch(r"final val loss \d\.\d{4}  LR \d\.\d\de-\d\d  decisions 60\n", out.getvalue())
    ctrl, scheduler = namespace["ctrl"], namespace["scheduler"]
    assert ctrl.history[0][0] == 1e-2 and scheduler.last_epoch == namespace["total_steps"] == 600
