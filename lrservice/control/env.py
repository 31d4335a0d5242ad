"""LRControlEnv: one child training run as a gymnasium episode (1909.09712).

Every ``action_every`` child steps the agent sees the 7 features of how the child is
training and scales its learning rate (discrete: up / down / keep by ``factor``;
continuous: a factor in ``[1/factor, factor]``). Reward is the negative validation loss
(dense, per action) or only the final one. An episode is ``task.steps`` child steps from an
initial LR drawn from ``initial_lrs``; a child whose loss turns non-finite ends the episode
with ``-divergence_penalty``. The rules live in :mod:`lrservice.control.actions`.
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from lrservice.child.data import ChildData
from lrservice.child.trainer import ChildTrainer, cached_task_data
from lrservice.config import TaskConfig
from lrservice.control.actions import (action_space, draw_start, env_sections, finite_features, next_lr,
                                       observation_space, step_reward)

ENV_NAME = "lrservice-lr-control"


class LRControlEnv(gym.Env):
    """The LR-control MDP over a :class:`ChildTrainer`.

    ``env_config`` is ``{"task": {...}, "controller": {...}}`` as plain dicts (config
    sections), so RLlib can ship it to remote env runners.
    """

    metadata = {"render_modes": []}

    def __init__(self, env_config: Mapping[str, Any] | None = None, data: ChildData | None = None):
        self.task, self.controller = env_sections(env_config)
        self.trainer = ChildTrainer(self.task, data=data if data is not None else cached_task_data(self.task))
        self.observation_space = observation_space()
        self.action_space = action_space(self.controller)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Fresh child; ``options`` may fix ``initial_lr`` and ``child_seed`` (evaluation runs)."""
        super().reset(seed=seed)
        lr, child_seed = draw_start(self.controller, self.np_random)
        options = options or {}
        lr = float(options.get("initial_lr", lr))
        child_seed = int(options.get("child_seed", child_seed))
        self.trainer.reset(lr, child_seed)
        features, val = self.trainer.observe()
        return finite_features(features), {"lr": lr, "val_loss": val.loss, "val_accuracy": val.accuracy,
                                           "step": 0, "child_seed": child_seed, "diverged": False}

    def step(self, action):
        trainer, c = self.trainer, self.controller
        lr = next_lr(trainer.lr, action, c, self.np_random)
        block = min(c.action_every, self.task.steps - trainer.step)
        result = trainer.train_steps(block, lr=lr)
        features, val = trainer.observe()
        diverged = trainer.diverged
        finished = trainer.step >= self.task.steps
        reward = step_reward(val.loss, finished, diverged, c)
        info = {"lr": lr, "train_loss": result.mean_loss, "val_loss": val.loss,
                "val_accuracy": val.accuracy, "step": trainer.step, "diverged": diverged}
        return finite_features(features), reward, bool(finished or diverged), False, info


def make_env(env_config: Mapping[str, Any]) -> LRControlEnv:
    """RLlib's env creator."""
    return LRControlEnv(env_config)


def register_env(name: str = ENV_NAME) -> str:
    """Register :func:`make_env` with Ray Tune's registry (also reaches remote runners); returns the name."""
    from ray.tune.registry import register_env as ray_register_env

    ray_register_env(name, make_env)
    return name


def env_config(task: TaskConfig, controller) -> dict:
    """The plain-dict ``env_config`` for a task and controller section."""
    import dataclasses

    return {"task": dataclasses.asdict(task), "controller": dataclasses.asdict(controller)}
