"""The controller's episode rules as plain functions, shared by the single and the vector env.

What an action does to the LR, how an episode starts (initial LR and child seed), what a step
is rewarded, and how observations stay finite. Keeping them here means ``LRControlEnv`` and
``LRVectorEnv`` cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from lrservice.config import ConfigError, ControllerConfig, TaskConfig, config_from_dict

DISCRETE_ACTIONS = ("multiply", "divide", "keep")
FEATURE_CLIP = 1e6  # a diverged child's features are replaced by finite values within this bound


def env_sections(env_config: Mapping[str, Any] | None, extra: tuple[str, ...] = ()) -> tuple[TaskConfig, ControllerConfig]:
    """Validated task and controller sections from an RLlib ``env_config`` dict."""
    cfg = dict(env_config or {})
    allowed = ("task", "controller", *extra)
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(f"env_config.{unknown[0]}: unknown key; allowed keys are: {', '.join(allowed)}")
    run = config_from_dict({k: cfg[k] for k in ("task", "controller") if k in cfg})
    return run.task, run.controller


def next_lr(lr: float, action: Any, controller: ControllerConfig, rng: np.random.Generator) -> float:
    """The LR after one action, then optional noise, then clipping to ``[lr_min, lr_max]``.

    Discrete: 0 multiplies by ``factor``, 1 divides by it, 2 keeps. Continuous: the action is
    the factor itself, clipped to ``[1/factor, factor]``. Noise is multiplicative,
    ``lr * exp(N(0, lr_noise_std))``, so it is relative and never makes the LR negative.
    """
    f = controller.factor
    if controller.action_space == "discrete":
        lr = lr * (f, 1.0 / f, 1.0)[int(np.asarray(action).reshape(-1)[0])]
    else:
        lr = lr * float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], 1.0 / f, f))
    if controller.lr_noise_std > 0:
        lr = lr * float(np.exp(rng.normal(0.0, controller.lr_noise_std)))
    return float(np.clip(lr, controller.lr_min, controller.lr_max))


def action_space(controller: ControllerConfig) -> gym.Space:
    """``Discrete(3)`` or a 1-D ``Box`` over ``[1/factor, factor]``."""
    if controller.action_space == "discrete":
        return gym.spaces.Discrete(3)
    f = controller.factor
    return gym.spaces.Box(np.float32(1.0 / f), np.float32(f), shape=(1,), dtype=np.float32)


def observation_space() -> gym.spaces.Box:
    """The 7 child features (:data:`lrservice.child.FEATURE_NAMES`)."""
    return gym.spaces.Box(-FEATURE_CLIP, FEATURE_CLIP, shape=(7,), dtype=np.float32)


def draw_start(controller: ControllerConfig, rng: np.random.Generator) -> tuple[float, int]:
    """An episode's initial LR (from ``initial_lrs`` unless ``initial_lr`` is fixed) and child seed."""
    lrs = controller.initial_lrs if controller.initial_lr is None else (controller.initial_lr,)
    lr = float(lrs[int(rng.integers(len(lrs)))])
    return lr, int(rng.integers(2**31 - 1))


def step_reward(val_loss: float, finished: bool, diverged: bool, controller: ControllerConfig) -> float:
    """``-divergence_penalty`` on divergence; else ``-val_loss`` every step (dense) or at the end (final)."""
    if diverged:
        return -float(controller.divergence_penalty)
    if controller.reward == "dense" or finished:
        return -float(val_loss)
    return 0.0


def finite_features(features: np.ndarray) -> np.ndarray:
    """Observations RLlib can digest: NaN becomes 0, infinities and outliers clip to +-FEATURE_CLIP."""
    return np.clip(np.nan_to_num(features, nan=0.0, posinf=FEATURE_CLIP, neginf=-FEATURE_CLIP),
                   -FEATURE_CLIP, FEATURE_CLIP).astype(np.float32)
