"""LRVectorEnv: K learning-rate control envs over batched children (gymnasium ``VectorEnv``).

Every sub-env is one episode of :class:`~lrservice.control.episodes.EpisodeBatch`, whose
children share a :class:`BatchedChildTrainer` per task, so one ``step`` trains all K
children together (see ``lrservice/child/batched.py`` for why that is faster). Finished
sub-envs reset on the next ``step`` (gymnasium's NEXT_STEP autoreset, which RLlib's
SingleAgentEnvRunner expects).

RLlib: ``register_vector_env()`` then ``.environment(VECTOR_ENV_NAME, env_config=...)``
and ``.env_runners(num_envs_per_env_runner=K, gym_env_vectorize_mode="vector_entry_point")``.
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from lrservice.child.data import ChildData
from lrservice.child.trainer import cached_task_data
from lrservice.config import ConfigError
from lrservice.control.actions import action_space, env_sections, observation_space
from lrservice.control.episodes import EpisodeBatch

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
        self.episodes = EpisodeBatch(self.task, self.controller, n,
                                     data_for=(lambda _t: data) if data is not None else cached_task_data)
        self.single_observation_space = observation_space(self.controller)
        self.single_action_space = action_space(self.controller)
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        self._started = False

    @property
    def trainer(self):
        """The first task's child pool (one pool per task: ``self.episodes.pools``)."""
        return self.episodes.pools[0]

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """Start every sub-env's episode; ``seed`` seeds the draws of initial LR, child seed and task."""
        if isinstance(seed, (list, tuple)):
            seed = seed[0]
        if seed is not None or not self._started:
            self.episodes.rng = np.random.default_rng(seed)
        self._started = True
        return self.episodes.reset()

    def step(self, actions):
        """Apply each sub-env's action, train every running child one block, observe."""
        obs, rewards, terminated, infos = self.episodes.step(actions)
        return obs, rewards, terminated, np.zeros(self.num_envs, dtype=bool), infos


def make_vector_env(env_config: Mapping[str, Any]) -> LRVectorEnv:
    """RLlib's env creator: it passes the env_config plus ``num_envs`` for vector entry points."""
    return LRVectorEnv(env_config)


def register_vector_env(name: str = VECTOR_ENV_NAME) -> str:
    """Register the creator with Ray Tune's registry (call in the driver) and return its name."""
    from ray.tune.registry import register_env

    register_env(name, make_vector_env)
    return name
