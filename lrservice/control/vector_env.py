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
from lrservice.config import ConfigError, ControllerConfig, TaskConfig, config_from_dict

VECTOR_ENV_NAME = "lrservice-lr-control-vector"


def next_lr(lr: float, action: Any, controller: ControllerConfig, rng: np.random.Generator) -> float:
    """The LR after one action: x factor (0), / factor (1), keep (2), or a continuous factor; noise; clip."""
    f = controller.factor
    if controller.action_space == "discrete":
        lr = lr * (f, 1.0 / f, 1.0)[int(action)]
    else:
        lr = lr * float(np.clip(np.asarray(action).reshape(-1)[0], 1.0 / f, f))
    if controller.lr_noise_std > 0:
        lr = lr * float(np.exp(rng.normal(0.0, controller.lr_noise_std)))
    return float(np.clip(lr, controller.lr_min, controller.lr_max))


def action_space(controller: ControllerConfig) -> gym.Space:
    if controller.action_space == "discrete":
        return gym.spaces.Discrete(3)
    f = controller.factor
    return gym.spaces.Box(np.float32(1.0 / f), np.float32(f), shape=(1,), dtype=np.float32)


def _sections(env_config: Mapping[str, Any] | None) -> tuple[TaskConfig, ControllerConfig]:
    cfg = dict(env_config or {})
    unknown = sorted(set(cfg) - {"task", "controller", "num_envs"})
    if unknown:
        raise ConfigError(f"env_config.{unknown[0]}: unknown key; allowed keys are: task, controller, num_envs")
    run = config_from_dict({k: cfg[k] for k in ("task", "controller") if k in cfg})
    return run.task, run.controller


class LRVectorEnv(gym.vector.VectorEnv):
    """K LR-control episodes over K children trained as one batch."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, env_config: Mapping[str, Any] | None = None, num_envs: int | None = None,
                 data: ChildData | None = None):
        self.task, self.controller = _sections(env_config)
        n = num_envs if num_envs is not None else int((env_config or {}).get("num_envs", 1))
        if n < 1:
            raise ConfigError(f"num_envs: {n!r} is not allowed; it must be an integer >= 1")
        self.num_envs = n
        self.trainer = BatchedChildTrainer(self.task, n, data=data)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(7,), dtype=np.float32)
        self.single_action_space = action_space(self.controller)
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        self._rng = np.random.default_rng()
        self._needs_reset = np.zeros(n, dtype=bool)
        self._started = False

    # -- episodes --------------------------------------------------------------------------
    def _draw_start(self) -> tuple[float, int]:
        c = self.controller
        lrs = c.initial_lrs if c.initial_lr is None else (c.initial_lr,)
        lr = float(lrs[int(self._rng.integers(len(lrs)))])
        return lr, int(self._rng.integers(2**31 - 1))

    def _start_episode(self, i: int) -> dict:
        lr, seed = self._draw_start()
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
            finished = steps[i] >= self.task.steps
            if diverged[i]:
                rewards[i] = -c.divergence_penalty
                terminated[i] = True
            elif c.reward == "dense" or finished:
                rewards[i] = -val_loss[i]
            terminated[i] |= finished
        feats = np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)
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
