"""LRControlEnv: one child training run as a gymnasium episode (1909.09712).

Every ``action_every`` child steps the agent sees how the child is training and scales its
learning rate; the episode rules (actions, rewards, twins, tasks) are those of
:class:`~lrservice.control.episodes.EpisodeBatch` with one env. Any model works here
(children are ordinary ``ChildTrainer`` objects when the model cannot be batched).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from lrservice.child.data import ChildData
from lrservice.child.pool import SeparateChildren
from lrservice.child.trainer import ChildTrainer, cached_task_data
from lrservice.config import TaskConfig
from lrservice.control.actions import action_space, env_sections, observation_space
from lrservice.control.episodes import EpisodeBatch

ENV_NAME = "lrservice-lr-control"


def _scalars(infos: Mapping[str, np.ndarray]) -> dict:
    return {k: np.asarray(v).reshape(-1)[0].item() for k, v in infos.items()}


class LRControlEnv(gym.Env):
    """The LR-control MDP over one child.

    ``env_config`` is ``{"task": {...}, "controller": {...}}`` as plain dicts (config
    sections), so RLlib can ship it to remote env runners.
    """

    metadata = {"render_modes": []}

    def __init__(self, env_config: Mapping[str, Any] | None = None, data: ChildData | None = None):
        self.task, self.controller = env_sections(env_config)
        data_for = (lambda _t: data) if data is not None else cached_task_data
        self.episodes = EpisodeBatch(self.task, self.controller, 1,
                                     pool_factory=lambda task, k: SeparateChildren(task, k, data=data_for(task)))
        self.observation_space = observation_space(self.controller)
        self.action_space = action_space(self.controller)

    @property
    def trainer(self) -> ChildTrainer:
        """The child of the current episode."""
        pool = self.episodes.pools[int(self.episodes.task_of[0])]
        return pool.children[0]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Fresh child; ``options`` may fix ``initial_lr``, ``child_seed`` and ``task`` (evaluation runs)."""
        super().reset(seed=seed)
        if seed is not None:
            self.episodes.rng = np.random.default_rng(seed)
        obs, infos = self.episodes.reset([dict(options or {})])
        return obs[0], _scalars(infos)

    def step(self, action):
        obs, rewards, terminated, infos = self.episodes.step([action], autoreset=False)
        return obs[0], float(rewards[0]), bool(terminated[0]), False, _scalars(infos)


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
    return {"task": dataclasses.asdict(task), "controller": dataclasses.asdict(controller)}
