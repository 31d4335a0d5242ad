"""A short real PPO run: the learned policy becomes state-dependent (early vs late in training).

Before training the policy is near uniform everywhere; after a few iterations of the default
recipe (time-aware features, log-improvement reward against a twin, factors that can anneal)
its action distribution late in a child's run must differ from early on. This can fail: a
policy that ignores its observation (as the paper preset did at this scale) gives a distance
near zero.
"""

from __future__ import annotations

import numpy as np
import pytest

from lrservice.child.trainer import load_task_data
from lrservice.config import config_from_dict
from lrservice.control.controller import LearnedController
from lrservice.control.episodes import EpisodeBatch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TASK = {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": 100, "val_subset": 128, "device": "cpu"}
CONTROLLER = {"features": "extended", "factors": [0.25, 1.0, 4.0], "action_every": 10,
              "initial_lrs": [0.03, 0.001, 0.0001], "reward": "log_improvement", "baseline": "twin",
              "gamma": 1.0, "gae_lambda": 1.0, "entropy_coeff": 0.0, "ppo_lr": 0.003,
              "train_batch_size": 320, "minibatch_size": 80, "num_epochs": 10,
              "num_env_runners": 0, "num_envs_per_env_runner": 16, "checkpoint_every": 100}
ITERATIONS = 6


def _early_late_distance(ctrl: LearnedController, config) -> float:
    """Mean total-variation distance between the policy's action distributions early and late in runs."""
    data = load_task_data(config.task)
    batch = EpisodeBatch(config.task, ctrl.config, 12, data_for=lambda _t: data, seed=123)
    obs, _ = batch.reset([{"initial_lr": lr, "child_seed": 900 + i}
                          for i, lr in enumerate([0.03, 0.001, 0.0001] * 4)])
    early, late = [], []
    done = np.zeros(12, dtype=bool)
    while not done.all():
        probs = ctrl.action_probabilities(obs)
        (early if obs[0, 7] < 0.3 else late if obs[0, 7] > 0.7 else []).append(probs)
        obs, _, term, _ = batch.step(ctrl.actions(obs), autoreset=False)
        done |= term
    return float(0.5 * np.abs(np.mean(early, axis=(0, 1)) - np.mean(late, axis=(0, 1))).sum())


def test_short_training_makes_the_policy_depend_on_time(tmp_path):
    import ray

    from lrservice.control.training import train_controller

    config = config_from_dict({"task": TASK, "controller": CONTROLLER})
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        train_controller(config, tmp_path / "untrained", iterations=1, log=lambda line: None)
        train_controller(config, tmp_path / "trained", iterations=ITERATIONS, log=lambda line: None)
    finally:
        ray.shutdown()
    before = _early_late_distance(LearnedController.from_checkpoint(tmp_path / "untrained" / "controller.pt"), config)
    after = _early_late_distance(LearnedController.from_checkpoint(tmp_path / "trained" / "controller.pt"), config)

    assert after > 0.12, f"policy still ignores time: early/late distance {after:.3f} (one iteration: {before:.3f})"
    assert after > before + 0.08
