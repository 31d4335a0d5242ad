"""The controller's episode rules as plain functions: actions, starts, rewards, observations.

What an action does to the LR (its level, under an optional envelope), how an episode starts
(initial LR and child seed), what a step is rewarded and how observations stay finite.
:class:`lrservice.control.episodes.EpisodeBatch` is the one place that applies them, for the
single env, the vector env and evaluation alike.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from lrservice.child.features import FEATURE_SETS, LEVEL_NAME
from lrservice.config import ConfigError, ControllerConfig, TaskConfig, stored_sections

WARMUP_START = 0.1  # an envelope's warmup (``envelope_warmup``) starts at this fraction of the level
FEATURE_CLIP = 1e6  # a diverged child's features are replaced by finite values within this bound


def env_sections(env_config: Mapping[str, Any] | None,
                 extra: tuple[str, ...] = ()) -> tuple[TaskConfig, ControllerConfig]:
    """Validated task and controller sections from an RLlib ``env_config`` dict."""
    cfg = dict(env_config or {})
    allowed = ("task", "controller", *extra)
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(f"env_config.{unknown[0]}: unknown key; allowed keys are: {', '.join(allowed)}")
    run = stored_sections({k: cfg[k] for k in ("task", "controller") if k in cfg})
    return run.task, run.controller


def episode_tasks(task: TaskConfig, controller: ControllerConfig) -> tuple[TaskConfig, ...]:
    """The tasks episodes are drawn from: ``controller.tasks``, or the run's one task."""
    return controller.tasks or (task,)


def task_labels(tasks: tuple[TaskConfig, ...]) -> list[str]:
    """A short distinct name per task, ``dataset/model/optimizer/steps`` (``#i`` appended where two agree)."""
    labels = [f"{t.dataset}/{t.model}/{t.optimizer}/{t.steps}" for t in tasks]
    return [f"{label}#{i}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def _index(action: Any) -> int:
    """A discrete action as an int, whether given as a scalar or a 1-element array."""
    return int(np.asarray(action).reshape(-1)[0])


def lr_factor(action: Any, controller: ControllerConfig) -> float:
    """What ``action`` multiplies the LR by.

    Discrete: ``action_factors[action]``. Continuous: a log-factor ``a`` clipped to [-1, 1],
    giving ``factor ** a`` (symmetric: +a and -a undo each other).
    """
    if controller.action_space == "levels":
        raise ValueError("lr_factor: a levels action sets the LR, it does not scale it; use next_lr")
    if controller.action_space == "discrete":
        return float(controller.action_factors[_index(action)])
    a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
    return float(controller.factor ** a)


def next_lr(lr: float, action: Any, controller: ControllerConfig, rng: np.random.Generator) -> float:
    """The LR after one action, then optional noise, then clipping to ``[lr_min, lr_max]``.

    ``levels`` sets the LR to ``levels[action]``; the other spaces multiply it by
    :func:`lr_factor`.

    Noise is multiplicative, ``lr * exp(N(0, lr_noise_std))``, so it is relative and never
    makes the LR negative.
    """
    if controller.action_space == "levels":
        lr = float(controller.levels[_index(action)])
    else:
        lr = lr * lr_factor(action, controller)
    if controller.lr_noise_std > 0:
        lr = lr * float(np.exp(rng.normal(0.0, controller.lr_noise_std)))
    return float(np.clip(lr, controller.lr_min, controller.lr_max))


def envelope(controller: ControllerConfig, progress: float) -> float:
    """The base schedule's multiplier at ``progress`` (child steps done / episode steps) in [0, 1].

    ``none`` 1; ``cosine`` ``(1 + cos(pi q)) / 2``; ``linear`` ``1 - q``. Without a warmup ``q`` is the
    progress and both decays are 1 at the start, so a level equals the LR in force there. With
    ``envelope_warmup`` w > 0 the multiplier first rises linearly from :data:`WARMUP_START` to 1
    over ``p < w`` and the decay runs over the rest, ``q = (p - w) / (1 - w)``: the level is the peak.
    """
    p = min(max(float(progress), 0.0), 1.0)
    if controller.envelope == "none":
        return 1.0
    w = float(controller.envelope_warmup)
    if p < w:
        return WARMUP_START + (1.0 - WARMUP_START) * p / w
    q = (p - w) / (1.0 - w)
    if controller.envelope == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * q))
    return 1.0 - q  # linear


def lr_in_force(level: float, progress: float, controller: ControllerConfig) -> float:
    """The LR a child trains with for the block starting at ``progress``: ``level * envelope(progress)``."""
    return float(level) * envelope(controller, progress)


def action_space(controller: ControllerConfig) -> gym.Space:
    """``Discrete`` over the factors or levels, or a 1-D ``Box`` over the log-factor ``[-1, 1]``."""
    if controller.action_space == "discrete":
        return gym.spaces.Discrete(len(controller.action_factors))
    if controller.action_space == "levels":
        return gym.spaces.Discrete(len(controller.levels))
    return gym.spaces.Box(np.float32(-1.0), np.float32(1.0), shape=(1,), dtype=np.float32)


def feature_names(controller: ControllerConfig) -> tuple[str, ...]:
    """The observation's columns: the feature set's, and the level's under an envelope."""
    return FEATURE_SETS[controller.features] + ((LEVEL_NAME,) if controller.envelope != "none" else ())


def observed_level(controller: ControllerConfig, level: float) -> float | None:
    """What :func:`lrservice.child.features.feature_set` gets as ``level``: the level under an envelope, else None."""
    return float(level) if controller.envelope != "none" else None


def observation_space(controller: ControllerConfig) -> gym.spaces.Box:
    """The observation's columns (:func:`feature_names`)."""
    n = len(feature_names(controller))
    return gym.spaces.Box(-FEATURE_CLIP, FEATURE_CLIP, shape=(n,), dtype=np.float32)


def draw_start(controller: ControllerConfig, rng: np.random.Generator) -> tuple[float, int]:
    """An episode's initial LR (from ``initial_lrs`` unless ``initial_lr`` is fixed) and child seed."""
    lrs = controller.start_lrs
    lr = float(lrs[int(rng.integers(len(lrs)))])
    return lr, int(rng.integers(2**31 - 1))


def _safe_log(loss: float) -> float:
    return math.log(max(float(loss), 1e-8))


def step_reward(controller: ControllerConfig, val_loss: float, prev_val_loss: float, finished: bool,
                diverged: bool, twin_loss: float | None = None, twin_prev_loss: float | None = None) -> float:
    """The reward for one action.

    ``-divergence_penalty`` on divergence. Else, per ``controller.reward``:
    ``dense`` ``-L_t`` every action; ``final`` ``-L_T`` at the end, 0 before;
    ``log_improvement`` ``log L_{t-1} - log L_t`` (the return telescopes to ``log L_0/L_T``).
    With a twin (``twin_loss`` given) the twin's own reward is subtracted, so the return
    measures the controller against the reference schedule on the same weights and batches.
    """
    if diverged:
        return -float(controller.divergence_penalty)

    def reward(loss: float, prev: float) -> float:
        if controller.reward == "log_improvement":
            return _safe_log(prev) - _safe_log(loss)
        if controller.reward == "dense" or finished:
            return -float(loss)
        return 0.0

    r = reward(val_loss, prev_val_loss)
    if twin_loss is not None:
        r -= reward(twin_loss, twin_prev_loss if twin_prev_loss is not None else twin_loss)
    return float(r)


def finite_features(features: np.ndarray) -> np.ndarray:
    """Observations RLlib can digest: NaN becomes 0, infinities and outliers clip to +-FEATURE_CLIP."""
    return np.clip(np.nan_to_num(features, nan=0.0, posinf=FEATURE_CLIP, neginf=-FEATURE_CLIP),
                   -FEATURE_CLIP, FEATURE_CLIP).astype(np.float32)
