"""A trained controller, usable without RLlib's Algorithm: in Tune trials or any training loop.

A checkpoint written by :func:`lrservice.control.training.train_controller` holds the policy
network (RLModule, ``learner_group/learner/rl_module/default_policy``), the env-to-module
connector with the MeanStdFilter statistics (``env_runner/env_to_module_connector``) and
``controller.json`` (task and controller sections: the action semantics).
:class:`LearnedController` normalises the 7 child features with those statistics *frozen*,
takes the deterministic action (argmax for discrete, the mean for continuous) and applies it
to the LR exactly as the env does (:func:`lrservice.control.actions.next_lr`, without noise).

Driving a ChildTrainer::

    ctrl = LearnedController.from_checkpoint(path)
    # every ctrl.action_every steps:
    feats, _ = trainer.observe(); trainer.lr = ctrl.next_lr(feats, trainer.lr)

Driving any torch optimizer in your own loop: :class:`ChildObserver` computes the same 7
features from your model and a validation batch, :class:`ControllerScheduler` acts every
``action_every`` calls of ``step()`` (see docs/controller.md).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lrservice.child.features import observation_features
from lrservice.config import ControllerConfig, TaskConfig, config_from_dict
from lrservice.control.actions import action_space, finite_features, next_lr

MODULE_PATH = ("learner_group", "learner", "rl_module", "default_policy")
FILTER_PATH = ("env_runner", "env_to_module_connector")


@dataclasses.dataclass(frozen=True)
class ObservationStats:
    """Frozen running statistics of the 7 features: ``clip((x - mean) / (std + eps), -clip, clip)``.

    ``eps`` is RLlib's ``SMALL_NUMBER``, added to the std as its MeanStdFilter does.
    """

    mean: np.ndarray
    std: np.ndarray
    clip: float | None = 10.0
    count: int = 0
    eps: float = 0.0

    def normalise(self, features: np.ndarray) -> np.ndarray:
        x = (np.asarray(features, dtype=np.float64) - self.mean) / (self.std + self.eps)
        if self.clip:
            x = np.clip(x, -self.clip, self.clip)
        return x.astype(np.float32)


IDENTITY_STATS = ObservationStats(mean=np.zeros(7), std=np.ones(7), clip=None)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or the newest one in a ``train-controller`` output directory."""
    from lrservice.control.training import META_FILE, latest_checkpoint

    p = Path(os.path.expanduser(str(path))).resolve()
    if (p / META_FILE).is_file() and p.joinpath(*MODULE_PATH).is_dir():
        return p
    latest = latest_checkpoint(p) if p.is_dir() else None
    if latest is None:
        raise FileNotFoundError(f"{path}: no controller checkpoint there; give a checkpoint directory "
                                "(checkpoints/iter_N) or an output directory written by `lrservice train-controller`")
    return latest


def load_observation_stats(checkpoint: Path) -> ObservationStats:
    """The MeanStdFilter statistics the env runners had when the checkpoint was written."""
    from ray.rllib.connectors.env_to_module import EnvToModulePipeline, MeanStdFilter
    from ray.rllib.utils.filter import SMALL_NUMBER, RunningStat

    where = checkpoint.joinpath(*FILTER_PATH)
    if not where.is_dir():
        return IDENTITY_STATS
    pipeline = EnvToModulePipeline.from_checkpoint(str(where))
    filt = next((c for c in pipeline.connectors if isinstance(c, MeanStdFilter)), None)
    if filt is None:
        return IDENTITY_STATS
    state = filt.get_state()[None]
    stat = RunningStat.from_state(state["running_stats"][0])
    mean = np.asarray(stat.mean, np.float64) if state["de_mean_to_zero"] else IDENTITY_STATS.mean
    std = np.asarray(stat.std, np.float64) if state["de_std_to_one"] else IDENTITY_STATS.std
    eps = float(SMALL_NUMBER) if state["de_std_to_one"] else 0.0
    return ObservationStats(mean=mean, std=std, clip=state["clip_by_value"], count=int(stat.n), eps=eps)


class LearnedController:
    """The trained PPO policy as an LR rule: ``next_lr(features, lr) -> lr``."""

    def __init__(self, module, stats: ObservationStats, controller: ControllerConfig,
                 task: TaskConfig | None = None, device: str = "cpu", checkpoint: Path | None = None):
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.stats = stats
        # Noise perturbs training episodes only; acting is deterministic.
        self.config = dataclasses.replace(controller, lr_noise_std=0.0)
        self.task = task
        self.checkpoint = checkpoint
        self.history: list[tuple[float, float]] = []  # (lr in, lr out) per decision since reset()
        self._space = action_space(self.config)
        self._dist_cls = module.get_inference_action_dist_cls()
        self._rng = np.random.default_rng(0)  # next_lr's noise draw; unused with lr_noise_std = 0

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu") -> "LearnedController":
        """Load the RLModule and observation stats from a checkpoint (or an output dir's newest)."""
        from ray.rllib.core.rl_module.rl_module import RLModule

        from lrservice.control.training import read_metadata

        ckpt = resolve_checkpoint(path)
        meta = read_metadata(ckpt)
        run = config_from_dict({"task": meta["task"], "controller": meta["controller"]})
        module = RLModule.from_checkpoint(str(ckpt.joinpath(*MODULE_PATH)))
        return cls(module, load_observation_stats(ckpt), run.controller, run.task, device, ckpt)

    @property
    def action_every(self) -> int:
        """Child steps between two calls of :meth:`next_lr`, as in training."""
        return int(self.config.action_every)

    def reset(self) -> None:
        """Start a new child run: forget the decision history (the policy itself is feed-forward)."""
        self.history.clear()

    @torch.no_grad()
    def action(self, features: np.ndarray):
        """The deterministic env action for these raw features: an index, or a 1-element factor array."""
        obs = self.stats.normalise(finite_features(np.asarray(features, dtype=np.float32).reshape(7)))
        inputs = self.module.forward_inference({"obs": torch.as_tensor(obs[None], device=self.device)})
        act = self._dist_cls.from_logits(inputs["action_dist_inputs"]).to_deterministic().sample()[0]
        act = act.cpu().numpy()
        if self.config.action_space == "discrete":
            return int(act)
        from ray.rllib.utils.spaces.space_utils import unsquash_action

        # PPO learns in [-1, 1] (RLlib's normalize_actions); the env sees [1/factor, factor].
        return np.asarray(unsquash_action(act.astype(np.float32), self._space), dtype=np.float32)

    def next_lr(self, features: np.ndarray, lr: float) -> float:
        """The LR for the next ``action_every`` steps: factor applied, clipped to ``[lr_min, lr_max]``."""
        new = next_lr(float(lr), self.action(features), self.config, self._rng)
        self.history.append((float(lr), new))
        return new


class ChildObserver:
    """The 7 controller features for any classifier in your own loop (as ``ChildTrainer.observe``).

    ``record(loss)`` after every training step; calling the observer evaluates ``model`` on the
    fixed validation batch ``(val_x, val_y)`` and returns the features. ``head`` is the output
    layer (default ``model.head``, else the model's last ``nn.Linear``); the LR is read from
    ``optimizer``.
    """

    def __init__(self, model: torch.nn.Module, val_x: torch.Tensor, val_y: torch.Tensor,
                 optimizer: torch.optim.Optimizer, head: torch.nn.Module | None = None):
        self.model, self.val_x, self.val_y, self.optimizer = model, val_x, val_y, optimizer
        self.head = head if head is not None else _output_layer(model)
        self._losses: list[float] = []
        self._prev_logits: torch.Tensor | None = None
        self.last_val_loss = math.nan

    def record(self, loss: float) -> None:
        self._losses.append(float(loss))

    def reset(self) -> None:
        self._losses, self._prev_logits, self.last_val_loss = [], None, math.nan

    @torch.no_grad()
    def __call__(self) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        logits = self.model(self.val_x)
        self.model.train(was_training)
        val_loss = float(F.cross_entropy(logits, self.val_y))
        train_loss = float(np.mean(self._losses)) if self._losses else val_loss
        feats = observation_features(train_loss, val_loss, logits, self._prev_logits,
                                     self.head.weight.detach(), float(self.optimizer.param_groups[0]["lr"]))
        self._prev_logits, self._losses, self.last_val_loss = logits, [], val_loss
        return feats


def _output_layer(model: torch.nn.Module) -> torch.nn.Module:
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Linear):
        return head
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError("ChildObserver: the model has no nn.Linear output layer; pass head=...")
    return linears[-1]


class ControllerScheduler:
    """Drives ``optimizer``'s LR with a :class:`LearnedController`, like a torch LR scheduler.

    Call ``step()`` once after every ``optimizer.step()``; every ``controller.action_every``
    calls it asks ``observe_fn()`` for the 7 features and sets the LR of every param group.
    """

    def __init__(self, controller: LearnedController, optimizer: torch.optim.Optimizer,
                 observe_fn: Callable[[], np.ndarray]):
        self.controller, self.optimizer, self.observe_fn = controller, optimizer, observe_fn
        self.last_epoch = 0
        self._last_lr = [float(g["lr"]) for g in optimizer.param_groups]

    def step(self) -> None:
        self.last_epoch += 1
        if self.last_epoch % self.controller.action_every:
            return
        lr = self.controller.next_lr(self.observe_fn(), float(self.optimizer.param_groups[0]["lr"]))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr] * len(self.optimizer.param_groups)

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "last_lr": list(self._last_lr)}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = int(state["last_epoch"])
        self._last_lr = list(state["last_lr"])
