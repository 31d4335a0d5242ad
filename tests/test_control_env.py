"""LRControlEnv: gymnasium contract, reward values, LR arithmetic, divergence, vector-env parity."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium.utils.env_checker import check_env

from lrservice.child.data import load_dataset
from lrservice.config import ConfigError, ControllerConfig, TaskConfig
from lrservice.control.actions import action_space, lr_factor, next_lr
from lrservice.control.env import LRControlEnv, env_config
from lrservice.control.vector_env import LRVectorEnv

TASK = TaskConfig(steps=60, batch_size=32, val_subset=64)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def make(digits, task=TASK, **controller):
    return LRControlEnv(env_config(task, ControllerConfig(**controller)), data=digits)


def test_passes_gymnasium_env_checker(digits):
    for space in ("discrete", "continuous"):
        check_env(make(digits, action_space=space), skip_render_check=True)
    check_env(make(digits, action_space="levels", levels=(1e-4, 1e-3)), skip_render_check=True)
    check_env(make(digits, features="extended", envelope="cosine"), skip_render_check=True)  # + the level column
    check_env(make(digits, features="invariant", envelope="cosine"), skip_render_check=True)  # 4 columns + level


def test_dense_reward_is_negative_val_loss_recomputed(digits):
    env = make(digits, initial_lr=1e-3)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(2)
    x, y = digits.val_x[:64], digits.val_y[:64]
    with torch.no_grad():
        env.trainer.model.eval()
        expected = float(F.cross_entropy(env.trainer.model(x), y))
    assert reward == pytest.approx(-expected, rel=1e-5)
    assert info["step"] == 10 and not terminated and not truncated


def test_episode_length_and_final_only_reward(digits):
    env = make(digits, reward="final", initial_lr=1e-3)
    env.reset(seed=1)
    rewards, done = [], False
    while not done:
        _, r, term, trunc, info = env.step(2)
        rewards.append(r)
        done = term or trunc
    assert len(rewards) == TASK.steps // 10 and info["step"] == TASK.steps
    assert all(r == 0.0 for r in rewards[:-1])
    assert rewards[-1] == pytest.approx(-info["val_loss"])


def test_discrete_actions_scale_clip_and_keep(digits):
    env = make(digits, initial_lr=1e-3, factor=2.0, lr_max=3e-3)
    env.reset(seed=0)
    lrs = [env.step(a)[4]["lr"] for a in (0, 0, 1, 2)]
    assert lrs == pytest.approx([2e-3, 3e-3, 1.5e-3, 1.5e-3])  # 4e-3 clipped to lr_max
    assert env.trainer.lr == pytest.approx(1.5e-3)


def test_continuous_action_is_a_clipped_log_factor():
    c = ControllerConfig(action_space="continuous", factor=4.0)
    rng = np.random.default_rng(0)
    assert next_lr(1e-3, np.array([0.5], dtype=np.float32), c, rng) == pytest.approx(2e-3, rel=1e-6)  # 4 ** 0.5
    assert next_lr(1e-3, np.array([-0.5]), c, rng) == pytest.approx(5e-4, rel=1e-6)
    assert next_lr(1e-3, np.array([3.0]), c, rng) == pytest.approx(4e-3)  # clipped to a = 1
    assert next_lr(1e-3, np.array([-7.0]), c, rng) == pytest.approx(2.5e-4)
    assert next_lr(1e-3, np.array([0.0]), c, rng) == pytest.approx(1e-3)


def test_discrete_factor_list_is_applied_by_index():
    c = ControllerConfig(factors=(0.5, 0.8, 1.0, 1.25, 2.0))
    rng = np.random.default_rng(0)
    got = [next_lr(1e-3, a, c, rng) for a in range(5)]
    assert got == pytest.approx([5e-4, 8e-4, 1e-3, 1.25e-3, 2e-3])


def test_levels_action_sets_the_lr_to_its_level():
    c = ControllerConfig(action_space="levels", levels=(1e-4, 1e-3, 5e-3))
    rng = np.random.default_rng(0)
    assert [next_lr(lr, a, c, rng) for lr, a in ((1e-2, 0), (1e-5, 1), (1e-3, 2))] == [1e-4, 1e-3, 5e-3]
    assert action_space(c) == gym.spaces.Discrete(3)
    with pytest.raises(ValueError, match="sets the LR"):
        lr_factor(0, c)


def test_lr_noise_is_relative_and_seeded():
    c = ControllerConfig(lr_noise_std=0.1)
    a = [next_lr(1e-3, 2, c, np.random.default_rng(5)) for _ in range(2)]
    assert a[0] == a[1] != 1e-3
    assert next_lr(1e-3, 2, ControllerConfig(), np.random.default_rng(5)) == 1e-3


def test_initial_lr_drawn_from_the_configured_set(digits):
    env = make(digits)
    seen = {env.reset(seed=s)[1]["lr"] for s in range(30)}
    assert seen == {1e-2, 1e-3, 1e-4}


def test_divergence_ends_episode_with_penalty(digits):
    task = dataclasses.replace(TASK, optimizer="sgd")
    env = LRControlEnv(env_config(task, ControllerConfig(initial_lr=1e6, lr_max=1e7, divergence_penalty=7.0)),
                       data=digits)
    obs, _ = env.reset(seed=0)
    done, steps = False, 0
    while not done:
        obs, reward, term, trunc, info = env.step(2)
        done, steps = term or trunc, steps + 1
    assert info["diverged"] and reward == -7.0 and steps < TASK.steps // 10
    assert np.all(np.isfinite(obs)) and env.observation_space.contains(obs)


def test_unknown_env_config_key_is_named():
    with pytest.raises(ConfigError, match="env_config.tsk: unknown key"):
        LRControlEnv({"tsk": {}})
    with pytest.raises(ConfigError, match="controller.action_space"):
        LRControlEnv({"controller": {"action_space": "multi"}})


@pytest.fixture
def digits64(digits, in_float64):
    """digits in float64 with float64 children: the single and batched paths then differ by
    ~1e-16 rounding that 50 chaotic steps grow to < 1e-8, not by float32 noise that grows to
    1e-1 on some CPUs (see tests/test_batched.py)."""
    return in_float64(digits)


def test_vector_env_with_one_child_matches_single_env(digits64):
    cfg = env_config(TASK, ControllerConfig())
    single, vector = LRControlEnv(cfg, data=digits64), LRVectorEnv(cfg, num_envs=1, data=digits64)
    o1, i1 = single.reset(seed=3)
    o2, i2 = vector.reset(seed=3)
    assert i1["lr"] == i2["initial_lr"][0]
    np.testing.assert_allclose(o1, o2[0], rtol=1e-4, atol=1e-6)  # observations leave as float32
    for action in (0, 1, 2, 0, 0):
        o1, r1, *_ = single.step(action)
        o2, r2, *_ = vector.step(np.array([action]))
        np.testing.assert_allclose(o1, o2[0], rtol=1e-4, atol=1e-6)
        assert r1 == pytest.approx(r2[0], rel=1e-6)
