"""LRVectorEnv: K learning-rate control envs backed by one BatchedChildTrainer.

A gymnasium ``VectorEnv`` whose sub-envs are the controller's LR-control episodes: every
sub-env owns one child of a :class:`BatchedChildTrainer`, so one ``step`` trains all K
children together (see ``lrservice/child/batched.py`` for why that is faster). Semantics
per sub-env follow ``LRControlEnv``: act every ``action_every`` child steps, observe the
7 child features, reward ``-val_loss`` (dense) or only at the end (final), LR clipped to
``[lr_min, lr_max]``, a diverged child ends its episode with ``-divergence_penalty``.
Finished sub-envs reset on the next ``step`` (gymnasium's NEXT_STEP autoreset, which
RLlib's SingleAgentEnvRunner expects).

RLlib: ``register_vector_env()`` then ``.environment(VECTOR_ENV_NAME, env_config=...)``
and ``.env_runners(num_envs_per_env_runner=K, gym_env_vectorize_mode="vector_entry_point")``.
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from lrservice.child.batched import BatchedChildTrainer
from lrservice.child.data import ChildData
from lrservice.config import ConfigError
from lrservice.control.actions import (action_space, draw_start, env_sections, finite_features, next_lr,
                                         observation_space, step_reward)

VECTOR_ENV_NAME = "lrservice-lr-control-vector"


class LRVectorEnv(gym.vector.VectorEnv):
    """K LR-control episodes over K children trained as one batch."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, env_config: Mapping[str, Any] | None = None, num_envs: int | None = None,
                 data: ChildData | None = None):
        self.task, self.controller = env_sections(env_config, extra=("num_envs",))
        n = num_envs if num_envs is not None else int((env_config or {}).get("num_envs", 1))
        if n < 1:
            raise ConfigError(f"num_envs: {n!r} is not allowed; it must be an integer >= 1")
        self.num_envs = n
        self.trainer = BatchedChildTrainer(self.task, n, data=data)
        self.single_observation_space = observation_space()
        self.single_action_space = action_space(self.controller)
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        self._rng = np.random.default_rng()
        self._needs_reset = np.zeros(n, dtype=bool)
        self._started = False

    # -- episodes --------------------------------------------------------------------------
    def _start_episode(self, i: int) -> dict:
        lr, seed = draw_start(self.controller, self._rng)
        self.trainer.reset_child(i, lr, seed)
        return {"initial_lr": lr, "child_seed": seed}

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """Start every sub-env's episode; ``seed`` seeds the draws of initial LR and child seed."""
        if isinstance(seed, (list, tuple)):
            seed = seed[0]
        if seed is not None or not self._started:
            self._rng = np.random.default_rng(seed)
        self._started = True
        starts = [self._start_episode(i) for i in range(self.num_envs)]
        feats, evals = self.trainer.observe()
        self._needs_reset[:] = False
        infos = {"initial_lr": np.array([s["initial_lr"] for s in starts]),
                 "child_seed": np.array([s["child_seed"] for s in starts]),
                 "val_loss": np.array([e.loss for e in evals])}
        return feats, infos

    def step(self, actions):
        """Apply each sub-env's action, train every running child ``action_every`` steps, observe."""
        n, c = self.num_envs, self.controller
        restart = np.flatnonzero(self._needs_reset)
        running = np.flatnonzero(~self._needs_reset)
        for i in restart:
            self._start_episode(int(i))
        lrs = self.trainer.lrs
        for i in running:
            lrs[i] = next_lr(lrs[i], actions[i], c, self._rng)
        self.trainer.lrs = lrs
        results = self.trainer.train_steps(c.action_every, children=running.tolist())
        feats, evals = self.trainer.observe()
        val_loss = np.array([e.loss for e in evals])
        steps = self.trainer.step
        diverged = self.trainer.diverged
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        for i in running:
            finished = bool(steps[i] >= self.task.steps)
            rewards[i] = step_reward(val_loss[i], finished, bool(diverged[i]), c)
            terminated[i] = finished or bool(diverged[i])
        feats = finite_features(feats)
        self._needs_reset[:] = terminated | truncated
        infos = {"val_loss": val_loss, "val_accuracy": np.array([e.accuracy for e in evals]),
                 "lr": self.trainer.lrs, "child_step": steps, "diverged": diverged,
                 "train_loss": np.array([r.mean_loss for r in results])}
        return feats, rewards, terminated, truncated, infos


def make_vector_env(env_config: Mapping[str, Any]) -> LRVectorEnv:
    """RLlib's env creator: it passes the env_config plus ``num_envs`` for vector entry points."""
    return LRVectorEnv(env_config)


def register_vector_env(name: str = VECTOR_ENV_NAME) -> str:
    """Register the creator with Ray Tune's registry (call in the driver) and return its name."""
    from ray.tune.registry import register_env

    register_env(name, make_vector_env)
    return name
