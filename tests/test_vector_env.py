"""LRVectorEnv against K separate children driven by the same actions, autoreset, and RLlib.

Reference: for each sub-env, a ChildTrainer reset with the sub-env's drawn (lr, seed), its
LR moved by the same actions through ``next_lr``, ``action_every`` steps, ``observe()``.
Observations, rewards and LRs must agree to rtol 1e-4 over 50 child steps. That comparison runs
in float64: in float32 the batched and single paths differ by rounding that 50 chaotic steps can
grow past 1e-1 on some CPUs (see tests/test_batched.py); in float64 it stays below 1e-8, and
observations leave as float32, which rtol 1e-4 covers with margin.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrservice.child.trainer import ChildTrainer, load_task_data
from lrservice.config import ConfigError, config_from_dict
from lrservice.control.actions import next_lr
from lrservice.control.vector_env import LRVectorEnv, register_vector_env

RTOL, ATOL = 1e-4, 1e-6
ENV_CONFIG = {
    "task": {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": 50, "val_subset": 128, "device": "cpu"},
    "controller": {"action_every": 10, "factor": 1.5},
}


@pytest.fixture(scope="module")
def data():
    return load_task_data(config_from_dict(ENV_CONFIG).task)


@pytest.fixture
def data64(data, in_float64):
    return in_float64(data)


def test_matches_separate_children_step_by_step(data64):
    data = data64
    env = LRVectorEnv(ENV_CONFIG, num_envs=3, data=data)
    obs, info = env.reset(seed=3)
    run = config_from_dict(ENV_CONFIG)
    children = []
    for lr, seed in zip(info["initial_lr"], info["child_seed"]):
        child = ChildTrainer(run.task, data=data)
        child.reset(float(lr), int(seed))
        children.append(child)
    ref_obs = np.stack([c.observe()[0] for c in children])
    np.testing.assert_allclose(obs, ref_obs, rtol=RTOL, atol=ATOL)
    rng = np.random.default_rng(0)
    for t in range(5):
        actions = rng.integers(0, 3, size=3)
        obs, rewards, terminated, truncated, info = env.step(actions)
        for i, child in enumerate(children):
            child.lr = next_lr(child.lr, actions[i], run.controller, rng)
            child.train_steps(run.controller.action_every)
            feats, val = child.observe()
            np.testing.assert_allclose(obs[i], feats, rtol=RTOL, atol=ATOL)
            assert rewards[i] == pytest.approx(-val.loss, rel=RTOL)
            assert info["lr"][i] == pytest.approx(child.lr, rel=1e-12)
        assert terminated.tolist() == [t == 4] * 3
        assert not truncated.any()
    assert info["step"].tolist() == [50, 50, 50]


def test_lr_moves_by_factor_and_is_clipped():
    c = config_from_dict({"controller": {"factor": 2.0, "lr_min": 1e-4, "lr_max": 1e-2}}).controller
    rng = np.random.default_rng(0)
    assert next_lr(1e-3, 0, c, rng) == pytest.approx(2e-3)
    assert next_lr(1e-3, 1, c, rng) == pytest.approx(5e-4)
    assert next_lr(1e-3, 2, c, rng) == pytest.approx(1e-3)
    assert next_lr(8e-3, 0, c, rng) == pytest.approx(1e-2)
    assert next_lr(1.5e-4, 1, c, rng) == pytest.approx(1e-4)


def test_finished_sub_envs_restart_on_the_next_step(data):
    cfg = {**ENV_CONFIG, "task": {**ENV_CONFIG["task"], "steps": 20}}
    env = LRVectorEnv(cfg, num_envs=2, data=data)
    env.reset(seed=0)
    env.step(np.array([2, 2]))
    _, _, terminated, _, info = env.step(np.array([2, 2]))
    assert terminated.all() and info["step"].tolist() == [20, 20]
    obs, rewards, terminated, _, info = env.step(np.array([0, 0]))
    assert rewards.tolist() == [0.0, 0.0] and not terminated.any()
    assert info["step"].tolist() == [0, 0]
    np.testing.assert_allclose(obs[:, 0], obs[:, 1], rtol=1e-6)  # no train steps yet: train_loss = val_loss
    _, _, _, _, info = env.step(np.array([2, 2]))
    assert info["step"].tolist() == [10, 10]


def test_diverged_child_ends_only_its_episode(data):
    cfg = {"task": {**ENV_CONFIG["task"], "optimizer": "sgd"},
           "controller": {"action_every": 10, "factor": 1e6, "lr_max": 1e9, "initial_lr": 1e-2,
                          "divergence_penalty": 7.0}}
    env = LRVectorEnv(cfg, num_envs=3, data=data)
    env.reset(seed=1)
    for _ in range(3):
        obs, rewards, terminated, _, info = env.step(np.array([2, 0, 2]))
        if terminated[1]:
            break
    assert terminated.tolist() == [False, True, False]
    assert rewards[1] == -7.0 and np.isfinite(obs).all()
    assert (rewards[[0, 2]] < 0).all() and not info["diverged"][[0, 2]].any()


def test_bad_env_config_names_the_field():
    with pytest.raises(ConfigError, match="env_config.tasks"):
        LRVectorEnv({"tasks": {}}, num_envs=2)
    with pytest.raises(ConfigError, match="controller.factor"):
        LRVectorEnv({"controller": {"factor": 0.5}}, num_envs=2)


def test_rllib_env_runner_samples_from_the_vector_env():
    """RLlib's own SingleAgentEnvRunner builds the vector env through its vector entry point."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    name = register_vector_env()
    config = (PPOConfig().environment(name, env_config=ENV_CONFIG)
              .env_runners(num_env_runners=0, num_envs_per_env_runner=4,
                           gym_env_vectorize_mode="vector_entry_point"))
    runner = SingleAgentEnvRunner(config=config)
    try:
        assert isinstance(runner.env.unwrapped, LRVectorEnv) and runner.num_envs == 4
        episodes = runner.sample(num_timesteps=40, random_actions=False)
    finally:
        runner.stop()
    assert sum(len(e) for e in episodes) == 40
    done = [e for e in episodes if e.is_done]
    assert len(done) == 8 and all(len(e) == 5 for e in done)
    torch.set_num_threads(1)
