"""ChildTrainer: learning, reproducibility, features against a direct computation, divergence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lrservice.child.data import load_dataset
from lrservice.child.features import COLUMN, FEATURE_NAMES, NUM_FEATURES, in_feature_order, observation_features
from lrservice.child.models import build_model
from lrservice.child.trainer import ChildTrainer
from lrservice.config import TaskConfig


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_mlp_reaches_90_percent_on_digits_within_1000_steps(digits):
    trainer = ChildTrainer(TaskConfig(model="mlp", batch_size=64), data=digits)
    trainer.reset(lr=1e-3, seed=0)
    trainer.train_steps(1000)
    assert trainer.step == 1000
    assert trainer.evaluate("val").accuracy > 0.90
    assert trainer.evaluate("test").accuracy > 0.90


@pytest.mark.parametrize("model", ["lenet5", "resnet18"])
def test_conv_models_train_on_image_shapes(digits, model):
    trainer = ChildTrainer(TaskConfig(model=model, batch_size=16, val_subset=32), data=digits)
    trainer.reset(lr=1e-3, seed=0)
    before = trainer.evaluate("val_subset").loss
    result = trainer.train_steps(30)
    assert result.steps == 30 and not result.diverged
    assert trainer.evaluate("val_subset").loss < before


def test_models_are_sized_from_input_shape():
    for shape in [(1, 8, 8), (1, 28, 28), (3, 32, 32)]:
        for name in ("mlp", "lenet5", "resnet18"):
            out = build_model(name, shape, 10)(torch.zeros(2, *shape))
            assert out.shape == (2, 10)
    with pytest.raises(ValueError, match="mlp, lenet5, resnet18"):
        build_model("vgg", (1, 8, 8), 10)


def test_same_seed_same_trajectory_different_seed_different(digits):
    def run(seed):
        t = ChildTrainer(TaskConfig(batch_size=32), data=digits)
        t.reset(lr=1e-3, seed=seed)
        return [t.train_steps(5).mean_loss for _ in range(4)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_lr_setter_reaches_optimizer_and_after_step_runs_each_step(digits):
    t = ChildTrainer(TaskConfig(batch_size=32), data=digits)
    t.reset(lr=1e-3)
    seen = []
    t.train_steps(3, lr=5e-4, after_step=lambda step, loss: seen.append((step, t.lr)))
    assert seen == [(1, 5e-4), (2, 5e-4), (3, 5e-4)]
    assert all(g["lr"] == 5e-4 for g in t.optimizer.param_groups)


def test_features_match_direct_computation(digits):
    task = TaskConfig(batch_size=32, val_subset=64)
    t = ChildTrainer(task, data=digits)
    t.reset(lr=2e-3, seed=0)
    r1 = t.train_steps(10)
    f1, ev1 = t.observe()
    x, y = digits.val_x[:64], digits.val_y[:64]
    with torch.no_grad():
        t.model.eval()
        logits1 = t.model(x)
    w = t.model.head.weight.detach()
    assert f1.shape == (7,) and len(FEATURE_NAMES) == 7
    assert f1[0] == pytest.approx(r1.mean_loss, rel=1e-5)
    assert f1[1] == pytest.approx(float(F.cross_entropy(logits1, y)), rel=1e-5) == pytest.approx(ev1.loss, rel=1e-5)
    assert f1[2] == pytest.approx(float(np.var(logits1.numpy(), ddof=1)), rel=1e-4)
    assert f1[3] == pytest.approx(float(np.var(logits1.numpy(), ddof=1)), rel=1e-4)  # first change is vs zero
    assert f1[4] == pytest.approx(float(w.numpy().mean()), rel=1e-4, abs=1e-7)
    assert f1[5] == pytest.approx(float(np.var(w.numpy(), ddof=1)), rel=1e-4)
    assert f1[6] == pytest.approx(2e-3)
    t.train_steps(10)
    f2, _ = t.observe()
    with torch.no_grad():
        logits2 = t.model(x)
    assert f2[3] == pytest.approx(float(np.var((logits2 - logits1).numpy(), ddof=1)), rel=1e-4)


def test_observation_features_hand_computed():
    logits = torch.tensor([[1.0, 3.0], [5.0, 7.0]])          # mean 4, unbiased var = 20/3
    prev = torch.tensor([[1.0, 1.0], [1.0, 1.0]])            # change: 0,2,4,6 -> var 20/3
    head = torch.tensor([[0.5, -0.5], [1.5, 2.5]])           # mean 1, unbiased var = 14/9... computed below
    f = observation_features(0.7, 0.9, logits, prev, head, 1e-3)
    assert f.tolist() == pytest.approx([0.7, 0.9, 20 / 3, 20 / 3, 1.0, (0.25 + 2.25 + 0.25 + 2.25) / 3, 1e-3])


def test_a_row_is_built_in_feature_names_order_from_every_name_and_no_other():
    values = {name: i * 10 for i, name in enumerate(reversed(FEATURE_NAMES))}
    row = in_feature_order(values)
    assert len(row) == NUM_FEATURES
    assert [row[COLUMN[name]] for name in FEATURE_NAMES] == [values[name] for name in FEATURE_NAMES]
    with pytest.raises(ValueError, match=r"missing \['lr'\]"):
        in_feature_order({k: v for k, v in values.items() if k != "lr"})
    with pytest.raises(ValueError, match=r"not in FEATURE_NAMES \['progress'\]"):
        in_feature_order({**values, "progress": 0.5})


def test_divergence_is_reported_not_raised(digits):
    t = ChildTrainer(TaskConfig(batch_size=32, optimizer="sgd"), data=digits)
    t.reset(lr=1e6, seed=0)
    result = t.train_steps(200)
    assert result.diverged and t.diverged
    assert result.steps < 200
    feats, ev = t.observe()
    assert feats.shape == (7,)


def test_untrained_trainer_says_what_to_do(digits):
    with pytest.raises(RuntimeError, match="reset"):
        ChildTrainer(TaskConfig(), data=digits).train_steps(1)


def test_unknown_split_names_allowed(digits):
    t = ChildTrainer(TaskConfig(), data=digits)
    t.reset(1e-3)
    with pytest.raises(ValueError, match="train, val, val_subset, test"):
        t.evaluate("holdout")
