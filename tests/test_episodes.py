"""Episode rules against hand-computed values: features, rewards, twins, tasks, short last blocks.

References are independent: log/exp of numbers read from the child directly, a second
ChildTrainer built from the same seed, and the arithmetic of the formulas in the docstrings.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from lrservice.child.features import ANCHORED_NAMES, EXTENDED_NAMES, FEATURE_NAMES, INVARIANT_NAMES, feature_set
from lrservice.child.trainer import ChildTrainer, load_task_data
from lrservice.config import ConfigError, ControllerConfig, TaskConfig, config_from_dict
from lrservice.control.actions import WARMUP_START, envelope, lr_in_force, step_reward
from lrservice.control.env import LRControlEnv, env_config
from lrservice.control.episodes import EpisodeBatch
from lrservice.control.vector_env import LRVectorEnv

TASK = TaskConfig(dataset="digits", model="mlp", batch_size=32, steps=55, val_subset=64, device="cpu")
KEEP = 2  # index of factor 1.0 in FACTORS
FACTORS = (0.5, 0.8, 1.0, 1.25, 2.0)


@pytest.fixture(scope="module")
def data():
    return load_task_data(TASK)


def test_extended_features_append_progress_and_logs():
    paper = np.array([0.5, 0.25, 3.0, 1.0, 0.01, 0.02, 1e-3], dtype=np.float32)
    ext = feature_set(paper, 0.3, "extended")
    assert ext.shape == (len(EXTENDED_NAMES),) and len(EXTENDED_NAMES) == len(FEATURE_NAMES) + 4
    np.testing.assert_array_equal(ext[:7], paper)
    assert ext[7] == pytest.approx(0.3)
    assert ext[8] == pytest.approx(-3.0, abs=1e-6)        # log10(1e-3)
    assert ext[9] == pytest.approx(math.log(0.5), rel=1e-6)
    assert ext[10] == pytest.approx(math.log(0.25), rel=1e-6)
    np.testing.assert_array_equal(feature_set(paper, 0.3, "paper"), paper)
    rows = feature_set(np.stack([paper, paper]), np.array([0.0, 1.0]), "extended")
    assert rows[:, 7].tolist() == [0.0, 1.0]
    steered = feature_set(np.stack([paper, paper]), 0.3, "extended", level=np.array([1e-2, 1e-4]))
    np.testing.assert_array_equal(steered[:, :11], np.stack([ext, ext]))
    np.testing.assert_allclose(steered[:, 11], [-2.0, -4.0], atol=1e-6)  # log10 of each level


def test_invariant_features_by_hand_and_free_of_task_scale():
    paper = np.array([0.5, 0.25, 3.0, 1.0, 0.01, 0.02, 1e-3], dtype=np.float32)
    row = feature_set(paper, 0.3, "invariant")
    assert row.shape == (len(INVARIANT_NAMES),) == (4,)
    np.testing.assert_allclose(row, [0.3, -3.0, math.log(0.25 / 0.5), math.log(1.0 / 3.0)], rtol=1e-6)
    # Another task's scales (losses x40, logits x7, other head weights) at the same LR and time: same row.
    other = paper * np.array([40, 40, 49, 49, -3, 9, 1], dtype=np.float32)
    np.testing.assert_allclose(feature_set(other, 0.3, "invariant"), row, rtol=1e-5)
    assert not np.allclose(feature_set(other, 0.3, "extended"), feature_set(paper, 0.3, "extended"))
    zero = paper.copy()
    zero[[0, 2, 3]] = 0.0  # a zero loss or variance stays finite
    assert np.isfinite(feature_set(zero, 0.0, "invariant")).all()


def test_anchored_features_are_the_invariant_ones_and_the_loss_over_the_first():
    paper = np.array([0.5, 0.25, 3.0, 1.0, 0.01, 0.02, 1e-3], dtype=np.float32)
    row = feature_set(paper, 0.3, "anchored", first_val_loss=2.0)
    assert row.shape == (len(ANCHORED_NAMES),) == (5,)
    np.testing.assert_allclose(row[:4], feature_set(paper, 0.3, "invariant"), rtol=1e-7)
    assert row[4] == pytest.approx(math.log(0.25 / 2.0), rel=1e-6)
    # another task's loss scale (x40, its first loss too) gives the same row: the anchor is scale-free
    other = paper * np.array([40, 40, 49, 49, -3, 9, 1], dtype=np.float32)
    np.testing.assert_allclose(feature_set(other, 0.3, "anchored", first_val_loss=80.0), row, rtol=1e-5)
    rows = feature_set(np.stack([paper, paper]), 0.3, "anchored", level=1e-2, first_val_loss=np.array([0.25, 0.5]))
    np.testing.assert_allclose(rows[:, 4], [0.0, math.log(0.5)], atol=1e-6)
    np.testing.assert_allclose(rows[:, 5], [-2.0, -2.0], atol=1e-6)  # the level still comes last
    with pytest.raises(ValueError, match="first validation loss"):
        feature_set(paper, 0.3, "anchored")


def test_episodes_anchor_on_their_own_first_observation(data):
    """Each episode's anchor is its untrained child's validation loss; an autoreset episode re-anchors."""
    c = ControllerConfig(features="anchored", factors=FACTORS, action_every=20)
    batch = EpisodeBatch(TASK, c, 2, data_for=lambda _t: data, seed=0)
    plain = EpisodeBatch(TASK, dataclasses.replace(c, features="invariant"), 2, data_for=lambda _t: data, seed=0)
    starts = [{"initial_lr": 3e-3, "child_seed": 1}, {"initial_lr": 1e-4, "child_seed": 2}]
    obs, info = batch.reset(starts)
    reference, _ = plain.reset(starts)
    np.testing.assert_array_equal(obs[:, 4], [0.0, 0.0])
    first = []
    for i, start in enumerate(starts):  # an independent reference: a child from the same seed, untrained
        trainer = ChildTrainer(TASK, data=data)
        trainer.reset(start["initial_lr"], start["child_seed"])
        first.append(float(trainer.observe()[0][1]))
    actions = [KEEP, KEEP]
    for _ in range(3):  # 55 steps: blocks of 20, 20, 15
        obs, _, done, info = batch.step(actions)
        reference, *_ = plain.step(actions)
        np.testing.assert_allclose(obs[:, :4], reference, rtol=1e-6)
        np.testing.assert_allclose(obs[:, 4], np.log(info["val_loss"] / np.array(first)), rtol=1e-5, atol=1e-6)
    assert done.all() and obs[0, 4] < -1.0 and obs[1, 4] < 0.0  # both below their first loss, 3e-3 far below
    obs, *_ = batch.step(actions)  # autoreset: new episodes, new children, each its own anchor
    np.testing.assert_array_equal(obs[:, 4], [0.0, 0.0])


@pytest.mark.parametrize("name,progress,expected", [
    ("none", 0.7, 1.0),
    ("cosine", 0.0, 1.0), ("cosine", 0.25, (1 + math.sqrt(0.5)) / 2), ("cosine", 0.5, 0.5), ("cosine", 1.0, 0.0),
    ("linear", 0.0, 1.0), ("linear", 0.3, 0.7), ("linear", 1.0, 0.0),
    ("cosine", 1.5, 0.0), ("linear", -0.2, 1.0),  # progress outside [0, 1] is clipped
])
def test_envelopes_by_hand(name, progress, expected):
    c = ControllerConfig(envelope=name)
    assert envelope(c, progress) == pytest.approx(expected, abs=1e-12)
    assert lr_in_force(3e-3, progress, c) == pytest.approx(3e-3 * expected, abs=1e-15)


@pytest.mark.parametrize("name", ["cosine", "linear"])
@pytest.mark.parametrize("warmup", [0.25, 0.5])
def test_warmup_envelopes_equal_torchs_warmup_schedulers(name, warmup):
    """``envelope_warmup``: the level times the envelope at step t of T is what torch's LinearLR warmup
    (from WARMUP_START) then CosineAnnealingLR / a LinearLR decay to 0 in SequentialLR give from lr = level."""
    total, level = 200, 3e-3
    c = ControllerConfig(envelope=name, envelope_warmup=warmup)
    w = round(warmup * total)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=level)
    rise = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START, end_factor=1.0, total_iters=w)
    decay = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - w) if name == "cosine" else
             torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=total - w))
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [rise, decay], milestones=[w])
    for t in range(total + 1):
        assert lr_in_force(level, t / total, c) == pytest.approx(scheduler.get_last_lr()[0], rel=1e-6, abs=1e-12)
        optimizer.step()
        scheduler.step()
    assert envelope(c, 0.0) == WARMUP_START and envelope(c, warmup) == 1.0


def test_envelope_scales_the_level_and_the_keeping_twin_matches(data):
    """Under a cosine envelope the child trains at level * (1 + cos(pi s / T)) / 2 from each block
    start s; the default twin is the controller that keeps, so keeping earns exactly 0."""
    c = ControllerConfig(features="extended", envelope="cosine", reward="log_improvement", baseline="twin",
                         factors=FACTORS, initial_lr=1e-3)
    batch = EpisodeBatch(TASK, c, 1, data_for=lambda _t: data, seed=0)
    obs, _ = batch.reset()
    assert obs.shape == (1, len(EXTENDED_NAMES) + 1) and obs[0, -1] == pytest.approx(-3.0)  # log10 of the level
    pool, s, twin = batch._where(0)
    for start in (0, 10, 20):
        obs, rewards, _, info = batch.step([KEEP])
        expected = 1e-3 * (1 + math.cos(math.pi * start / TASK.steps)) / 2
        assert info["lr"][0] == pytest.approx(expected, rel=1e-12) and info["level"][0] == pytest.approx(1e-3)
        assert pool.lrs[s] == pytest.approx(expected, rel=1e-12)
        assert pool.lrs[twin] == pytest.approx(expected, rel=1e-12)
        assert rewards[0] == pytest.approx(0.0, abs=1e-6)
    obs, rewards, _, info = batch.step([4])  # x2 moves the level; the envelope still applies
    assert info["level"][0] == pytest.approx(2e-3) and obs[0, -1] == pytest.approx(math.log10(2e-3), rel=1e-6)
    assert pool.lrs[s] == pytest.approx(2e-3 * (1 + math.cos(math.pi * 30 / TASK.steps)) / 2, rel=1e-12)
    assert rewards[0] != 0.0


@pytest.mark.parametrize("reward,expected", [
    ("dense", -0.4),
    ("final", 0.0),
    ("log_improvement", math.log(0.5) - math.log(0.4)),
])
def test_step_rewards_by_hand(reward, expected):
    c = ControllerConfig(reward=reward)
    assert step_reward(c, 0.4, 0.5, finished=False, diverged=False) == pytest.approx(expected)


def test_final_reward_and_divergence_penalty():
    c = ControllerConfig(reward="final", divergence_penalty=3.0)
    assert step_reward(c, 0.4, 0.5, finished=True, diverged=False) == pytest.approx(-0.4)
    assert step_reward(c, float("nan"), 0.5, finished=False, diverged=True) == -3.0


def test_twin_reward_subtracts_the_twins_own_reward():
    c = ControllerConfig(reward="log_improvement", baseline="twin")
    got = step_reward(c, 0.4, 0.5, False, False, twin_loss=0.45, twin_prev_loss=0.5)
    assert got == pytest.approx((math.log(0.5) - math.log(0.4)) - (math.log(0.5) - math.log(0.45)))
    dense = ControllerConfig(reward="dense", baseline="twin")
    assert step_reward(dense, 0.4, 0.5, False, False, twin_loss=0.45, twin_prev_loss=0.5) == pytest.approx(0.05)


def test_log_improvement_return_telescopes_to_log_l0_over_lt(data):
    c = ControllerConfig(reward="log_improvement", factors=FACTORS, initial_lr=3e-3)
    batch = EpisodeBatch(TASK, c, 2, data_for=lambda _t: data, seed=0)
    _, info = batch.reset()
    first = info["val_loss"].copy()
    total, done = np.zeros(2), np.zeros(2, dtype=bool)
    rng = np.random.default_rng(1)
    while not done.all():
        _, r, term, info = batch.step(rng.integers(0, 5, size=2), autoreset=False)
        total += np.where(done, 0.0, r)
        done |= term
    np.testing.assert_allclose(total, np.log(first) - np.log(info["val_loss"]), rtol=1e-9)


@pytest.mark.parametrize("pool", ["separate", "batched"])
def test_twin_shares_initial_weights_and_batch_order(data, pool):
    """With 'keep' actions the controlled child and its constant twin are the same run: reward 0."""
    c = ControllerConfig(reward="log_improvement", baseline="twin", factors=FACTORS, initial_lr=1e-3)
    if pool == "separate":
        from lrservice.child.pool import SeparateChildren

        batch = EpisodeBatch(TASK, c, 2, pool_factory=lambda t, k: SeparateChildren(t, k, data=data), seed=3)
    else:
        batch = EpisodeBatch(TASK, c, 2, data_for=lambda _t: data, seed=3)
    _, info = batch.reset()
    np.testing.assert_allclose(info["val_loss"], info["twin_val_loss"], rtol=0, atol=0)
    for _ in range(3):
        _, rewards, _, info = batch.step(np.full(2, KEEP))
        np.testing.assert_allclose(info["val_loss"], info["twin_val_loss"], rtol=1e-6)
        np.testing.assert_allclose(rewards, 0.0, atol=1e-6)
    # Acting differently from the twin makes the reward the difference of the two improvements.
    before, twin_before = info["val_loss"].copy(), info["twin_val_loss"].copy()
    _, rewards, _, info = batch.step(np.array([0, 4]))
    expected = (np.log(before) - np.log(info["val_loss"])) - (np.log(twin_before) - np.log(info["twin_val_loss"]))
    np.testing.assert_allclose(rewards, expected, rtol=1e-9)
    assert batch.child_steps == 2 * 2 * 40  # two envs, each child and twin, four blocks of 10


def test_twin_follows_a_named_policy(data):
    c = ControllerConfig(baseline="twin", initial_lr=1e-3, twin_policy={"name": "FIX", "k0": 5e-3}, factors=FACTORS)
    batch = EpisodeBatch(TASK, c, 1, data_for=lambda _t: data, seed=0)
    batch.reset()
    batch.step([KEEP])
    pool, s, twin = batch._where(0)
    assert pool.lrs[s] == pytest.approx(1e-3) and pool.lrs[twin] == pytest.approx(5e-3)
    with pytest.raises(ConfigError, match="controller.twin_policy"):
        config_from_dict({"controller": {"baseline": "twin", "twin_policy": {"name": "NOPE"}}})


def test_single_and_batched_paths_agree_with_a_short_last_block(data):
    """The contract: LRControlEnv (ChildTrainer) and LRVectorEnv (batched) play the same episode.

    55 steps with action every 10: the last block is 5 steps in both, and both end at step 55.
    """
    cfg = env_config(TASK, ControllerConfig(features="extended", factors=FACTORS, reward="log_improvement"))
    single, vector = LRControlEnv(cfg, data=data), LRVectorEnv(cfg, num_envs=1, data=data)
    o1, i1 = single.reset(seed=5)
    o2, i2 = vector.reset(seed=5)
    assert i1["initial_lr"] == i2["initial_lr"][0] and i1["child_seed"] == i2["child_seed"][0]
    np.testing.assert_allclose(o1, o2[0], rtol=1e-4, atol=1e-6)
    steps = []
    for action in (3, 3, 1, 2, 0, 2):
        o1, r1, t1, _, i1 = single.step(action)
        o2, r2, t2, _, i2 = vector.step(np.array([action]))
        np.testing.assert_allclose(o1, o2[0], rtol=1e-3, atol=1e-5)
        assert r1 == pytest.approx(r2[0], rel=1e-3, abs=1e-5) and t1 == t2[0]
        assert set(i1) == set(i2)  # one set of info keys
        steps.append(i1["step"])
    assert steps == [10, 20, 30, 40, 50, 55] and t1
    assert o1[7] == pytest.approx(1.0)  # progress


def test_multi_task_round_robin_and_per_episode_draws(data):
    other = dataclasses.replace(TASK, steps=30, batch_size=16)
    c = ControllerConfig(tasks=(TASK, other), features="extended", factors=FACTORS)
    batch = EpisodeBatch(TASK, c, 4, data_for=lambda _t: data, seed=0)
    _, info = batch.reset()
    assert info["task"].tolist() == [0, 1, 0, 1]
    for _ in range(3):
        obs, _, term, info = batch.step(np.full(4, KEEP))
    assert info["step"].tolist() == [30, 30, 30, 30] and term.tolist() == [False, True, False, True]
    np.testing.assert_allclose(obs[:, 7], [30 / 55, 1.0, 30 / 55, 1.0], rtol=1e-6)
    single = EpisodeBatch(TASK, c, 1, data_for=lambda _t: data, seed=0)
    seen = set()
    for _ in range(12):
        single.reset()
        seen.add(int(single.task_of[0]))
    assert seen == {0, 1}


def test_one_env_of_separate_children_takes_tasks_it_never_started(data):
    """One env, two tasks (RLlib with one env per runner): the env's slot in the task it has not
    drawn yet was never started, and only its current task's child may be observed."""
    other = dataclasses.replace(TASK, steps=30, batch_size=16)
    c = ControllerConfig(tasks=(TASK, other), features="extended", factors=FACTORS)
    env = LRControlEnv(env_config(TASK, c), data=data)
    first = env.reset(options={"task": 1, "initial_lr": 1e-3, "child_seed": 5})[1]
    assert first["task"] == 1 and env.episodes.pools[0].children[0].step == 0
    for _ in range(3):
        obs, _, terminated, _, info = env.step(KEEP)
    assert terminated and info["step"] == other.steps and obs[7] == pytest.approx(1.0)
    _, info = env.reset(options={"task": 0, "initial_lr": 1e-3, "child_seed": 5})
    obs, _, terminated, _, info = env.step(KEEP)
    assert info["task"] == 0 and info["step"] == 10 and not terminated
    assert obs[7] == pytest.approx(10 / TASK.steps) and np.isfinite(info["val_loss"])


def test_separate_children_match_a_plain_child_trainer(data):
    from lrservice.child.pool import SeparateChildren

    pool = SeparateChildren(TASK, 2, data=data)
    pool.reset_child(0, 1e-3, 7)
    pool.reset_child(1, 2e-3, 8)
    ref = ChildTrainer(TASK, data=data)
    ref.reset(2e-3, 8)
    pool.train_steps(10)
    ref.train_steps(10)
    feats, evals = pool.observe()
    ref_feats, ref_eval = ref.observe()
    np.testing.assert_array_equal(feats[1], ref_feats)
    assert evals[1].loss == ref_eval.loss and pool.step.tolist() == [10, 10]
    for a, b in zip(pool.children[1].model.parameters(), ref.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_config_feature_set_names_are_the_features_modules():
    from lrservice import config
    from lrservice.child.features import FEATURE_SETS

    assert config.FEATURE_SETS == tuple(FEATURE_SETS)
