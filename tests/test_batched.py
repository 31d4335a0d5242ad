"""BatchedChildTrainer against K separate ChildTrainers: same seeds and LRs, same trajectories.

Batched and separate children differ only in the order of floating-point operations
(batched vs single matmuls; a grouped convolution may pick another algorithm, another
thread count splits reductions differently). Training is chaotic: over 50 Adam steps a
rounding difference grows by up to ~1e6-1e7 (float32: 0.14 relative on some weights on an
AMD EPYC from a 6e-8 unit roundoff). So the long-horizon equivalence runs in **float64**
(unit roundoff 1.1e-16; the same growth leaves < 1e-8; we allow rtol 1e-6), and the
production dtype float32 is compared over the first 10 steps only, before chaos amplifies
rounding (measured <= 1e-6 relative, on 1 and 2 threads; we allow 1e-4). Checked with
``torch.set_num_threads`` 1 and 2 and ``OMP_NUM_THREADS=1`` / ``2``.

Models outside lrservice are defined here and reached as plugins (``task.model: "<this module>:Class"``),
the door a user's model comes through.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from lrservice.child.batched import MODE_FAST, MODE_VMAP, BatchedChildTrainer, NotBatchable
from lrservice.child.features import COLUMN, FEATURE_NAMES
from lrservice.child.pool import SeparateChildren, child_pool, pool_mode
from lrservice.child.trainer import ChildTrainer, load_task_data
from lrservice.config import TaskConfig

RTOL, ATOL = 1e-4, 1e-6          # float32, short horizons (see the module docstring)
RTOL64, ATOL64 = 1e-6, 1e-9      # float64, 50 steps
LRS = (1e-2, 1e-3, 3e-3, 1e-4)
SEEDS = (0, 1, 2, 7)


@pytest.fixture(scope="module")
def task():
    return TaskConfig(dataset="digits", model="mlp", batch_size=32, val_subset=128, device="cpu")


@pytest.fixture(scope="module")
def data(task):
    return load_task_data(task)


@pytest.fixture
def float64(data, in_float64):
    """The data in float64, children built in float64 (conftest.in_float64)."""
    return in_float64(data)


def _separate(task, data, lrs, seeds):
    children = [ChildTrainer(task, data=data) for _ in lrs]
    for child, lr, seed in zip(children, lrs, seeds):
        child.reset(lr, seed)
    return children


def _run_both(task, data, lrs=LRS, seeds=SEEDS, blocks=5, every=10, lr_plan=None, fast_path=True):
    """Train both ways in blocks of ``every`` steps; return per-block (features, results) pairs."""
    batched = BatchedChildTrainer(task, len(lrs), data=data, fast_path=fast_path)
    batched.reset(lrs, seeds)
    children = _separate(task, data, lrs, seeds)
    history = []
    for b in range(blocks):
        if lr_plan is not None:
            batched.lrs = lr_plan[b]
            for child, lr in zip(children, lr_plan[b]):
                child.lr = lr
        results_b = batched.train_steps(every)
        feats_b, evals_b = batched.observe()
        results_s, feats_s, evals_s = [], [], []
        for child in children:
            results_s.append(child.train_steps(every))
            f, e = child.observe()
            feats_s.append(f)
            evals_s.append(e)
        history.append((feats_b, np.stack(feats_s), results_b, results_s, evals_b, evals_s))
    return batched, children, history


class ConvBatchNorm(nn.Module):
    """Not an lrservice model: conv + BatchNorm2d, a hidden layer with BatchNorm1d, an output layer
    named ``out`` (the observer's rule finds it as the last Linear).

    The layers ahead of BatchNorm have no bias, as in ResNet: BatchNorm subtracts it again, so
    its true gradient is 0 and the computed one is rounding noise, which Adam normalises into
    full-size steps of random sign. Such a bias then moves by ~lr per step differently in any two
    float32 runs that round differently (seen: 3% on the eval loss after 10 steps at lr 1e-2),
    through the running mean that tracks it; with the bias it is a property of the model, not
    of batching (in float64 the two paths still agree to 1e-6).
    """

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(input_shape[0], 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.hidden = nn.Sequential(nn.Linear(16, 24, bias=False), nn.BatchNorm1d(24), nn.ReLU())
        self.out = nn.Linear(24, num_classes)

    def forward(self, x):
        return self.out(self.hidden(self.features(x)))


class DataDependent(nn.Module):
    """Branches on a value of its input: Python control flow that vmap cannot batch."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(int(np.prod(input_shape)), num_classes)

    def forward(self, x):
        h = x.flatten(1)
        return self.head(h if h.mean() > 0 else -h)


class ReadsItem(DataDependent):
    """Scales by a Python float read from a tensor (``.item()``)."""

    def forward(self, x):
        return self.head(x.flatten(1)) * (1 + self.head.bias.abs().max().item())


class WithDropout(DataDependent):
    """Dropout in training mode: random masks per child that a batched child could not reproduce."""

    def forward(self, x):
        return self.head(nn.functional.dropout(x.flatten(1), 0.2, self.training))


class CountsCalls(DataDependent):
    """Output depends on how often forward ran: vmap runs it once for all children, so batched
    children would differ from separate ones. Nothing raises; the trial's check must catch it."""

    def __init__(self, input_shape, num_classes):
        super().__init__(input_shape, num_classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.head(x.flatten(1)) * self.calls


CUSTOM = {"convbn": ConvBatchNorm, "data_dependent": DataDependent, "reads_item": ReadsItem,
          "dropout": WithDropout, "counts_calls": CountsCalls}


@pytest.fixture
def custom_models():
    """``task.model`` for a name: the models above as plugins (``"<this module>:Class"``, the door a user's
    model comes through, for separate and batched children alike), lrservice's own by name."""
    return lambda name: f"{__name__}:{CUSTOM[name].__name__}" if name in CUSTOM else name


CASES = [("mlp", "adam", True), ("mlp", "adam", False), ("mlp", "momentum", True), ("lenet5", "adam", True),
         ("convbn", "adam", True), ("convbn", "momentum", True)]


@pytest.mark.parametrize("model,optimizer,fast_path", CASES)
def test_same_trajectories_as_separate_children(task, float64, custom_models, model, optimizer, fast_path):
    """50 steps in float64: weights, buffers, losses and features agree far below float32 noise."""
    data = float64
    task = dataclasses.replace(task, model=custom_models(model), optimizer=optimizer)
    batched, children, history = _run_both(task, data, fast_path=fast_path)
    assert batched.mode == (MODE_FAST if model == "mlp" and fast_path else MODE_VMAP)
    assert batched.stack.flat.dtype == torch.float64
    for feats_b, feats_s, res_b, res_s, ev_b, ev_s in history:
        # features leave as float32: one float32 rounding on top of float64 agreement
        np.testing.assert_allclose(feats_b, feats_s, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose([r.mean_loss for r in res_b], [r.mean_loss for r in res_s], rtol=RTOL64)
        np.testing.assert_allclose([e.loss for e in ev_b], [e.loss for e in ev_s], rtol=RTOL64)
        assert [r.steps for r in res_b] == [r.steps for r in res_s] == [10] * len(LRS)
    np.testing.assert_array_equal(batched.step, [c.step for c in children])
    for i, child in enumerate(children):
        ref = child.model.state_dict()
        got = batched.child_state_dict(i)
        assert list(got) == list(ref)
        for name in ref:
            assert got[name].dtype == ref[name].dtype
            torch.testing.assert_close(got[name], ref[name], rtol=RTOL64, atol=ATOL64)
    assert [e.accuracy for e in batched.evaluate("test")] == pytest.approx(
        [c.evaluate("test").accuracy for c in children], abs=2 / len(data.test_y))


@pytest.mark.parametrize("model,optimizer,fast_path", CASES)
def test_float32_agrees_over_a_short_horizon(task, data, custom_models, model, optimizer, fast_path):
    """The production dtype: after 10 steps losses and features agree to rtol 1e-4."""
    task = dataclasses.replace(task, model=custom_models(model), optimizer=optimizer)
    _, _, history = _run_both(task, data, blocks=1, fast_path=fast_path)
    feats_b, feats_s, res_b, res_s, ev_b, ev_s = history[0]
    np.testing.assert_allclose(feats_b, feats_s, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose([r.mean_loss for r in res_b], [r.mean_loss for r in res_s], rtol=RTOL)
    np.testing.assert_allclose([e.loss for e in ev_b], [e.loss for e in ev_s], rtol=RTOL)


def test_initial_weights_and_first_observation_match_exactly(task, data):
    batched = BatchedChildTrainer(task, 3, data=data)
    batched.reset([1e-3] * 3, [5, 6, 5])
    children = _separate(task, data, [1e-3] * 3, [5, 6, 5])
    for i, child in enumerate(children):
        for name, value in child.model.state_dict().items():
            assert torch.equal(batched.child_state_dict(i)[name], value)
    assert torch.equal(batched.child_state_dict(0)["head.weight"], batched.child_state_dict(2)["head.weight"])
    assert not torch.equal(batched.child_state_dict(0)["head.weight"], batched.child_state_dict(1)["head.weight"])
    feats, _ = batched.observe()
    ref = np.stack([c.observe()[0] for c in children])
    np.testing.assert_allclose(feats, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("fast_path", [True, False])
def test_each_column_holds_the_feature_feature_names_puts_there(task, data, fast_path):
    """Batched and separate rows, read by name through ``COLUMN``, against each feature computed here
    from the child itself: the ``lr`` column is the LR set, ``train_loss`` the block's mean loss, and so
    on. A row built in another order than ``FEATURE_NAMES`` fails (after a first observation, all seven
    values differ)."""
    lrs, seeds = (3e-3, 7e-4), (0, 1)
    batched = BatchedChildTrainer(task, len(lrs), data=data, fast_path=fast_path)
    batched.reset(lrs, seeds)
    children = _separate(task, data, lrs, seeds)
    x, _ = batched.split("val_subset")
    with torch.no_grad():
        before_b = batched.logits(x)
    batched.observe()
    results_b = batched.train_steps(5)
    feats_b, evals_b = batched.observe()
    with torch.no_grad():
        logits_b, head_b = batched.logits(x), batched.head_weights()
    for i, child in enumerate(children):
        before = child.logits(x)
        child.observe()
        result = child.train_steps(5)
        feats, evaluation = child.observe()
        logits = child.logits(x)
        rows = {"separate": (feats, result, evaluation, logits, before, child.model.head.weight.detach()),
                "batched": (feats_b[i], results_b[i], evals_b[i], logits_b[i], before_b[i], head_b[i])}
        for how, (row, res, ev, out, prev, head) in rows.items():
            expected = {"train_loss": res.mean_loss, "val_loss": ev.loss, "pred_var": float(out.var()),
                        "pred_change_var": float((out - prev).var()), "head_weight_mean": float(head.mean()),
                        "head_weight_var": float(head.var()), "lr": lrs[i]}
            assert set(expected) == set(FEATURE_NAMES) and len(set(expected.values())) == len(FEATURE_NAMES)
            for name in FEATURE_NAMES:
                assert row[COLUMN[name]] == pytest.approx(expected[name], rel=1e-4, abs=1e-7), (how, name)


def test_per_child_lr_changes_only_that_child(task, float64):
    """Changing child 1's LR mid-run changes child 1's trajectory and nobody else's (float64: 40 steps)."""
    data = float64
    plan_a = [LRS] * 4
    plan_b = [LRS, LRS, (LRS[0], 5e-2, LRS[2], LRS[3]), (LRS[0], 5e-2, LRS[2], LRS[3])]
    _, _, hist_a = _run_both(task, data, blocks=4, lr_plan=plan_a)
    _, _, hist_b = _run_both(task, data, blocks=4, lr_plan=plan_b)
    fa, fb = hist_a[-1][0], hist_b[-1][0]
    np.testing.assert_array_equal(np.delete(fa, 1, axis=0), np.delete(fb, 1, axis=0))
    assert fb[1, 6] == pytest.approx(5e-2)
    assert abs(fa[1, 1] - fb[1, 1]) > 1e-3
    np.testing.assert_allclose(hist_b[-1][0], hist_b[-1][1], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("model", ["mlp", "convbn"])
def test_divergence_of_one_child_leaves_the_others_alone(task, data, custom_models, model):
    """An absurd LR makes child 2 diverge; it freezes, the others train exactly as without it."""
    calm = (1e-3, 3e-3, 1e-3, 1e-4)
    wild = (1e-3, 3e-3, 1e8, 1e-4)
    sgd = dataclasses.replace(task, optimizer="sgd", model=custom_models(model))
    ref = BatchedChildTrainer(sgd, 4, data=data)
    ref.reset(calm, SEEDS)
    bat = BatchedChildTrainer(sgd, 4, data=data)
    bat.reset(wild, SEEDS)
    single = ChildTrainer(sgd, data=data)
    single.reset(wild[2], SEEDS[2])
    for _ in range(5):
        ref.train_steps(10)
        res_bat = bat.train_steps(10)
        single.train_steps(10)
    f_ref, _ = ref.observe()
    f_bat, _ = bat.observe()
    assert bat.diverged.tolist() == [False, False, True, False]
    assert single.diverged
    assert bat.step[2] == single.step < 50
    assert res_bat[2].diverged and res_bat[2].steps == 0
    assert [r.steps for i, r in enumerate(res_bat) if i != 2] == [10, 10, 10]
    keep = [0, 1, 3]
    np.testing.assert_array_equal(f_bat[keep], f_ref[keep])
    if model == "mlp":  # values near the float32 limit: with BatchNorm which ones overflow is rounding
        for name, value in single.model.state_dict().items():
            assert torch.equal(torch.isfinite(bat.child_state_dict(2)[name]), torch.isfinite(value))
    assert np.isfinite(f_bat[keep]).all()
    frozen = bat.child_state_dict(2)
    bat.train_steps(3)
    for name, value in bat.child_state_dict(2).items():  # weights and running statistics alike
        torch.testing.assert_close(value, frozen[name], rtol=0, atol=0, equal_nan=True)


def test_reset_child_restarts_one_child_like_a_fresh_trainer(task, float64):
    data = float64  # 35 steps: float64 keeps the comparison about logic, not rounding
    batched = BatchedChildTrainer(task, 2, data=data)
    batched.reset([1e-3, 1e-3], [0, 1])
    batched.train_steps(15)
    batched.observe()
    batched.reset_child(1, 2e-3, 9)
    batched.train_steps(20)
    feats, _ = batched.observe()
    fresh = ChildTrainer(task, data=data)
    fresh.reset(2e-3, 9)
    fresh.train_steps(5)   # the out-of-step cursors: child 1 took 20 steps since its reset,
    fresh.train_steps(15)  # so its batch order restarted while child 0's continued
    np.testing.assert_allclose(feats[1], fresh.observe()[0], rtol=RTOL, atol=ATOL)
    assert batched.step.tolist() == [35, 20]


NOT_BATCHABLE = [
    ("data_dependent", "data-dependent control flow"),
    ("reads_item", ".item()"),
    ("dropout", "random operation"),
    ("counts_calls", "vmapped training outputs differ from the model's own forward"),
]


@pytest.mark.parametrize("model,why", NOT_BATCHABLE)
def test_a_model_vmap_cannot_batch_falls_back_to_separate_children(task, data, custom_models, model, why):
    """The trial refuses it with a one-line reason; the pool is then K ChildTrainers that train."""
    task = dataclasses.replace(task, model=custom_models(model), optimizer="sgd")
    with pytest.raises(NotBatchable) as refused:
        BatchedChildTrainer(task, 2, data=data)
    reason = refused.value.reason
    assert why in reason and "\n" not in reason and len(reason) <= 160
    pool = child_pool(task, 2, data=data)
    assert isinstance(pool, SeparateChildren)
    assert pool.mode == f"separate: {reason}" == pool_mode(task, data)
    pool.reset_child(0, 1e-2, 0)
    pool.reset_child(1, 1e-2, 1)
    assert [r.steps for r in pool.train_steps(3)] == [3, 3]


def test_pool_mode_says_how_children_train(task, data, custom_models):
    assert pool_mode(task, data) == MODE_FAST == child_pool(task, 3, data=data).mode
    for model in ("lenet5", "convbn"):
        pool = child_pool(dataclasses.replace(task, model=custom_models(model)), 3, data=data)
        assert isinstance(pool, BatchedChildTrainer) and pool.mode == MODE_VMAP


def test_resnet18_batches_with_per_child_batchnorm(float64):
    """lrservice's ResNet-18 (20 BatchNorm layers) on 8x8 digits, batch 4, 2 steps in float64: every
    weight and running statistic of each child as a separate ChildTrainer's, eval outputs too."""
    task = TaskConfig(dataset="digits", model="resnet18", batch_size=4, val_subset=16, device="cpu")
    data = float64
    batched, children, history = _run_both(task, data, lrs=(1e-3, 3e-4), seeds=(0, 1), blocks=2, every=1)
    assert batched.mode == MODE_VMAP
    assert any(name.endswith("running_var") for name in batched.stack.buffers)
    for feats_b, feats_s, res_b, res_s, ev_b, ev_s in history:
        np.testing.assert_allclose(feats_b, feats_s, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose([e.loss for e in ev_b], [e.loss for e in ev_s], rtol=RTOL64)
    for i, child in enumerate(children):
        got = batched.child_state_dict(i)
        for name, ref in child.model.state_dict().items():
            torch.testing.assert_close(got[name], ref, rtol=RTOL64, atol=ATOL64)
