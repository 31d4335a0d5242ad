"""RLlib PPO for the LR controller on the new API stack (RLModule, Learner, EnvRunner, ConnectorV2).

:func:`build_ppo_config` turns a :class:`RunConfig` and a :class:`Placement` into a
``PPOConfig``: separate actor and critic MLPs (``controller.hidden``), observations
normalised by a running ``MeanStdFilter`` connector, env runners placed where
:func:`lrservice.runtime.plan_placement` says (GPU workers or a worker resource), the
learner on the head, failed env runners restarted. :class:`EpisodeRecorder` logs each
finished episode's final validation loss/accuracy, divergence and LR trajectory as env-runner
metrics, so ``algo.train()`` results carry them per iteration (keys below).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.connectors.env_to_module import MeanStdFilter
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

from lrservice.config import ControllerConfig, RunConfig
from lrservice.control.env import env_config, register_env
from lrservice.runtime import Placement

MAX_RUNNER_RESTARTS = 10
# An env step trains a child 10 steps and evaluates it, so one sample call of a few hundred env
# steps can outlast RLlib's 60 s default on a loaded machine; RLlib would then drop the samples
# and the iteration would train on nothing. Wait long enough for a real child instead.
SAMPLE_TIMEOUT_S = 900.0
# Env-runner metrics logged per finished episode (``result["env_runners"][KEY]`` after ``algo.train()``):
FINAL_VAL_LOSS = "final_val_loss"          # mean over the iteration's episodes
FINAL_VAL_ACCURACY = "final_val_accuracy"  # mean over the iteration's episodes
DIVERGED = "diverged_frac"                 # fraction of the iteration's episodes that diverged
LR_KEYS = ("lr_start", "lr_min", "lr_median", "lr_max", "lr_end")  # LR trajectory of each runner's last episode
# (window=1 per runner, averaged over runners; not reduce="item": RLlib 2.60 asserts when merging several)


def mean_std_filter(env=None, spaces=None, device=None) -> MeanStdFilter:
    """The env-to-module connector: running mean/std normalisation of the features (1909.09712)."""
    return MeanStdFilter()


def uses_vector_env(run_config: RunConfig) -> bool:
    """K > 1 envs per runner train as one batch (:class:`LRVectorEnv`), measured ~2x faster per child."""
    return run_config.controller.num_envs_per_env_runner > 1


def linear_decay(start: float, final: float | None, c: ControllerConfig,
                 iterations: int | None = None) -> float | list[list[float]]:
    """``start``, or with ``final`` RLlib's piecewise schedule from ``start`` to ``final`` over the run's env
    steps (``iterations`` (default ``c.iterations``) x ``train_batch_size``; RLlib interpolates by env steps
    sampled and holds the last value). A longer ``--iterations`` on ``--resume`` stretches it."""
    if final is None:
        return start
    total = c.iterations if iterations is None else iterations
    return [[0, start], [total * c.train_batch_size, final]]


def ppo_lr_schedule(c: ControllerConfig, iterations: int | None = None) -> float | list[list[float]]:
    """PPO's optimizer LR: ``ppo_lr`` decaying to ``ppo_lr_final`` if set, so the last checkpoints
    settle instead of jittering (docs/controller.md)."""
    return linear_decay(c.ppo_lr, c.ppo_lr_final, c, iterations)


def entropy_schedule(c: ControllerConfig, iterations: int | None = None) -> float | list[list[float]]:
    """PPO's entropy bonus: ``entropy_coeff`` annealing to ``entropy_coeff_final`` if set."""
    return linear_decay(c.entropy_coeff, c.entropy_coeff_final, c, iterations)


def build_ppo_config(run_config: RunConfig, placement: Placement, iterations: int | None = None) -> PPOConfig:
    """The PPO algorithm config for ``run_config``'s task and controller, placed per ``placement``;
    ``iterations``: the run's total (default ``controller.iterations``), for PPO's LR schedule.

    Learner: in the driver (``num_learners=0``) unless ``placement.learner_custom`` pins it,
    then one remote learner that asks for that (head) resource. Env runners ask for
    ``placement``'s CPUs, GPUs and custom (worker) resources.
    """
    task, c = run_config.task, run_config.controller
    if uses_vector_env(run_config):
        from lrservice.control.vector_env import register_vector_env

        env_name, vectorize = register_vector_env(), "vector_entry_point"
    else:
        env_name, vectorize = register_env(), "sync"
    runners = c.num_env_runners
    fragment = max(1, -(-c.train_batch_size // max(1, runners) // c.num_envs_per_env_runner))
    config = (
        PPOConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .framework("torch")
        .environment(env_name, env_config=env_config(task, c))
        .env_runners(
            num_env_runners=runners,
            num_envs_per_env_runner=c.num_envs_per_env_runner,
            gym_env_vectorize_mode=vectorize,
            num_cpus_per_env_runner=placement.env_runner_cpus,
            num_gpus_per_env_runner=placement.env_runner_gpus,
            custom_resources_per_env_runner=dict(placement.env_runner_custom),
            env_to_module_connector=mean_std_filter,
            rollout_fragment_length=fragment,
            sample_timeout_s=SAMPLE_TIMEOUT_S,
        )
        .training(
            train_batch_size_per_learner=c.train_batch_size,
            minibatch_size=c.minibatch_size,
            num_epochs=c.num_epochs,
            lr=ppo_lr_schedule(c, iterations),
            gamma=c.gamma,
            lambda_=c.gae_lambda,
            entropy_coeff=entropy_schedule(c, iterations),
            clip_param=c.clip_param,
            kl_coeff=c.kl_coeff,
            kl_target=c.kl_target,
        )
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(c.hidden), fcnet_activation="tanh",
                                                   vf_share_layers=False))
        .callbacks(EpisodeRecorder)
        .fault_tolerance(restart_failed_env_runners=True, max_num_env_runner_restarts=MAX_RUNNER_RESTARTS,
                         delay_between_env_runner_restarts_s=1.0)
        .debugging(seed=task.seed)
    )
    if placement.learner_custom:
        config = config.learners(num_learners=1, num_cpus_per_learner=1,
                                 custom_resources_per_learner=dict(placement.learner_custom))
    else:
        config = config.learners(num_learners=0)
    return config


def episode_summary(lrs: list[float], final_val_loss: float, final_val_accuracy: float,
                    diverged: bool, steps: int) -> dict[str, Any]:
    """One finished episode as plain numbers: final validation loss/accuracy and the LR trajectory."""
    arr = np.asarray(lrs, dtype=np.float64)
    return {
        "final_val_loss": float(final_val_loss),
        "final_val_accuracy": float(final_val_accuracy),
        "diverged": bool(diverged),
        "child_steps": int(steps),
        "lr_start": float(arr[0]),
        "lr_end": float(arr[-1]),
        "lr_min": float(arr.min()),
        "lr_median": float(np.median(arr)),
        "lr_max": float(arr.max()),
    }


def _info_lr(info: dict) -> float | None:
    for key in ("lr", "initial_lr"):
        if key in info:
            return float(np.asarray(info[key]).reshape(-1)[0])
    return None


class EpisodeRecorder(RLlibCallback):
    """Logs a summary of every finished episode as env-runner metrics (means over the iteration).

    The LR trajectory is collected step by step in ``episode.custom_data``, which survives
    RLlib cutting a long episode into rollout fragments.
    """

    def on_environment_created(self, *, env_runner=None, **kwargs) -> None:
        """One torch thread per env runner: runners are the unit of parallelism."""
        import torch

        torch.set_num_threads(1)

    def on_episode_start(self, *, episode, **kwargs) -> None:
        lr = _info_lr(episode.get_infos(-1))
        episode.custom_data["lrs"] = [] if lr is None else [lr]

    def on_episode_step(self, *, episode, **kwargs) -> None:
        lr = _info_lr(episode.get_infos(-1))
        if lr is not None:
            episode.custom_data.setdefault("lrs", []).append(lr)

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        info = episode.get_infos(-1)
        lrs = episode.custom_data.get("lrs") or [float("nan")]
        steps = info.get("step", info.get("child_step", 0))
        summary = episode_summary(lrs, float(info.get("val_loss", float("nan"))),
                                  float(info.get("val_accuracy", float("nan"))),
                                  bool(info.get("diverged", False)), int(np.asarray(steps).reshape(-1)[0]))
        if metrics_logger is not None:
            # A diverged child's loss is not a loss: NaN is skipped by RLlib's nan-mean.
            if summary["diverged"] or not np.isfinite(summary["final_val_loss"]):
                summary["final_val_loss"] = summary["final_val_accuracy"] = float("nan")
            metrics_logger.log_value(FINAL_VAL_LOSS, summary["final_val_loss"], reduce="mean")
            metrics_logger.log_value(FINAL_VAL_ACCURACY, summary["final_val_accuracy"], reduce="mean")
            metrics_logger.log_value(DIVERGED, float(summary["diverged"]), reduce="mean")
            for key in LR_KEYS:
                metrics_logger.log_value(key, summary[key], reduce="mean", window=1)
