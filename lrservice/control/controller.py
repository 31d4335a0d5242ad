"""A trained controller as an LR rule, without RLlib: in Tune trials, evaluation or any loop.

:class:`LearnedController` runs the exported policy (:mod:`lrservice.control.checkpoint`):
features are normalised with the statistics frozen at export, the actor network gives the
deterministic action (argmax for discrete, the mean for continuous) and the action moves
the LR exactly as in training (:func:`lrservice.control.actions.next_lr`, without noise).
A controller trained with an envelope moves a level and returns ``level * envelope(progress)``;
it keeps the level between calls (``reset()`` forgets it, for the next run), as it keeps the
run's first validation loss for ``anchored`` features.

Driving a ChildTrainer decides where training episodes do, at steps 0, N, 2N, ... below the
run's length (N = ``ctrl.action_every``), before each block::

    ctrl = LearnedController.from_checkpoint("controller.pt")
    while trainer.step < total_steps:
        feats, _ = trainer.observe()
        trainer.lr = ctrl.next_lr(feats, trainer.lr, progress=trainer.step / total_steps)
        trainer.train_steps(min(ctrl.action_every, total_steps - trainer.step))

Driving any torch optimizer: :class:`ChildObserver` computes the same features from your model
and a validation batch; :class:`ControllerScheduler` is a ``torch.optim.lr_scheduler.LRScheduler``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

from lrservice.child.features import COLUMN, NUM_FEATURES, feature_set, val_loss_of
from lrservice.child.observer import ChildObserver  # re-exported: users import it from here with the scheduler
from lrservice.config import ConfigError
from lrservice.control.actions import finite_features, lr_in_force, next_lr, observed_level
from lrservice.control.checkpoint import export_payload, export_sections, load_export, resolve_checkpoint

__all__ = ["ChildObserver", "ControllerScheduler", "LearnedController", "policy_network"]
ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "linear": torch.nn.Identity, None: torch.nn.Identity}


def policy_network(policy: Mapping[str, Any]) -> torch.nn.Sequential:
    """The actor as a plain ``nn.Sequential``: Linear, activation, ..., Linear (no activation last)."""
    layers: list[torch.nn.Module] = []
    specs = policy["layers"]
    for j, spec in enumerate(specs):
        out_f, in_f = spec["weight"].shape
        linear = torch.nn.Linear(in_f, out_f)
        with torch.no_grad():
            linear.weight.copy_(spec["weight"])
            linear.bias.copy_(spec["bias"])
        layers.append(linear)
        if j < len(specs) - 1:
            layers.append(ACTIVATIONS[policy.get("activation", "tanh")]())
    return torch.nn.Sequential(*layers).eval()


class Actor:
    """One exported policy network with the observation normaliser frozen at its export."""

    def __init__(self, part: Mapping[str, Any]):
        self.network = policy_network(part["policy"])
        norm = part["normaliser"]
        self.mean = norm["mean"].numpy().astype(np.float64)
        self.std = norm["std"].numpy().astype(np.float64)
        self.clip, self.eps = norm["clip"], float(norm["eps"])

    def normalise(self, rows: np.ndarray) -> np.ndarray:
        """Frozen MeanStdFilter: ``clip((x - mean) / (std + eps), -clip, clip)``."""
        x = (np.asarray(rows, dtype=np.float64) - self.mean) / (self.std + self.eps)
        if self.clip:
            x = np.clip(x, -self.clip, self.clip)
        return x.astype(np.float32)

    @torch.no_grad()
    def outputs(self, rows: np.ndarray) -> torch.Tensor:
        """The network's outputs (logits, or Gaussian mean and log-std) for finite feature-set rows ``(K, F)``."""
        return self.network(torch.as_tensor(self.normalise(rows)))


class LearnedController:
    """The trained PPO policy as an LR rule: ``next_lr(features, lr, progress) -> lr``.

    An ensemble export (several runs of one recipe, ``controller.across_runs: ensemble``) has one
    :class:`Actor` per run; they act on the mean of their action probabilities.
    """

    def __init__(self, payload: Mapping[str, Any], source: Path | None = None):
        self.task, controller = export_sections(payload)
        self.config = dataclasses.replace(controller, lr_noise_std=0.0)  # noise perturbs training only
        self.payload = payload
        self.checkpoint = source
        self.actors = [Actor(part) for part in payload.get("members") or [payload]]
        if len(self.actors) > 1 and self.config.action_space == "continuous":
            raise ConfigError(f"{source or 'controller'}: an ensemble of continuous policies has no action "
                              "probabilities to average")
        self.history: list[tuple[float, float]] = []  # (lr in, lr out) per decision since reset()
        self.level: float | None = None  # the level next_lr set last since reset() (used under an envelope)
        self.first_val_loss: float | None = None  # the validation loss next_lr saw first since reset()
        self._rng = np.random.default_rng(0)  # next_lr's noise draw; unused with lr_noise_std = 0

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> "LearnedController":
        """From an exported file (no Ray needed), or an RLlib checkpoint / output directory."""
        where = resolve_checkpoint(path)
        payload = load_export(where) if where.is_file() else export_payload(where)
        return cls(payload, where)

    @property
    def action_every(self) -> int:
        """Child steps between two calls of :meth:`next_lr`, as in training."""
        return int(self.config.action_every)

    @property
    def features(self) -> str:
        return self.config.features

    def reset(self) -> None:
        """Start a new child run: forget the decision history (the policy itself is feed-forward)."""
        self.history.clear()
        self.level = self.first_val_loss = None

    def run_state(self) -> dict:
        """What :meth:`next_lr` keeps between decisions of one run: the level and the first validation loss."""
        return {"level": self.level, "first_val_loss": self.first_val_loss}

    def load_run_state(self, state: Mapping[str, Any]) -> None:
        """Continue a run from :meth:`run_state` (a Tune trial restored from its checkpoint)."""
        self.level, self.first_val_loss = state["level"], state["first_val_loss"]

    def _actor(self, what: str) -> Actor:
        """The one actor, for what only a single policy has; an ensemble acts through
        :meth:`action_probabilities`, and answering for its first member would be silently wrong."""
        if len(self.actors) > 1:
            raise ValueError(f"{what}: this controller is an ensemble of {len(self.actors)} policies, which has no "
                             "single one; use action_probabilities or actions")
        return self.actors[0]

    @property
    def network(self) -> torch.nn.Sequential:
        """The actor as a plain ``nn.Sequential`` (a single policy only)."""
        return self._actor("network").network

    def normalise(self, rows: np.ndarray) -> np.ndarray:
        """The actor's frozen MeanStdFilter: ``clip((x - mean) / (std + eps), -clip, clip)`` (a single policy only)."""
        return self._actor("normalise").normalise(rows)

    def _outputs(self, rows: np.ndarray) -> torch.Tensor:
        """The actor's outputs (logits, or Gaussian mean and log-std) for raw feature-set rows ``(K, F)``."""
        return self._actor("outputs").outputs(finite_features(np.atleast_2d(rows)))

    def actions(self, rows: np.ndarray) -> np.ndarray:
        """Deterministic env actions for raw feature-set rows ``(K, F)``: indices, or log-factors ``(K, 1)``."""
        if len(self.actors) > 1:  # an ensemble: the action most probable on the actors' mean
            return self.action_probabilities(rows).argmax(axis=1)
        out = self._outputs(rows)
        if self.config.action_space != "continuous":  # discrete factors or levels: the most probable action
            return out.argmax(dim=1).numpy()
        return out[:, : out.shape[1] // 2].clamp(-1.0, 1.0).numpy()  # the Gaussian's mean

    def action_probabilities(self, rows: np.ndarray) -> np.ndarray:
        """The stochastic training policy's probability of each discrete action for feature-set rows ``(K, F)``
        (an ensemble's: the mean over its actors)."""
        if self.config.action_space == "continuous":
            raise ValueError("action_probabilities: a continuous controller has no action probabilities")
        rows = finite_features(np.atleast_2d(rows))
        return np.mean([torch.softmax(actor.outputs(rows), dim=1).numpy() for actor in self.actors], axis=0)

    @property
    def needs_progress(self) -> bool:
        """Whether decisions need the fraction of training done (time-aware features or an envelope)."""
        return self.features != "paper" or self.config.envelope != "none"

    def observation(self, paper_features: np.ndarray, progress: float | None, level: float | None = None,
                    first_val_loss: float | None = None) -> np.ndarray:
        """This controller's feature row from the 7 paper features, the fraction of training done, the level and
        the run's first validation loss (``anchored`` features; on a run's first observation, its own)."""
        if self.needs_progress and progress is None:
            raise ValueError(f"this controller uses {self.features!r} features and envelope "
                             f"{self.config.envelope!r}: pass progress (child steps done / total steps)")
        paper = np.asarray(paper_features).reshape(NUM_FEATURES)
        level = observed_level(self.config, level if level is not None else paper[COLUMN["lr"]])
        first = val_loss_of(paper) if first_val_loss is None else first_val_loss
        return feature_set(paper.astype(np.float32), progress or 0.0, self.features, level, first)

    def decide(self, features: np.ndarray, lr: float, progress: float | None = None,
               level: float | None = None, first_val_loss: float | None = None) -> tuple[float, float]:
        """One decision from the LR in force ``lr``: ``(new level, LR for the next action_every steps)``.

        The action moves the level (clipped to ``[lr_min, lr_max]``): ``level`` if given and the
        controller steers an envelope, else ``lr`` itself (without an envelope, or on a run's
        first decision, where the run's initial LR is the level). The LR returned is the new level under
        the envelope at ``progress``. ``first_val_loss`` is the run's first observation's (None on
        the first decision: these features' own); callers keep it, as they keep the level.
        """
        level = float(lr) if level is None or self.config.envelope == "none" else float(level)
        action = self.actions(self.observation(features, progress, level, first_val_loss)[None])[0]
        new_level = next_lr(level, action, self.config, self._rng)
        new = lr_in_force(new_level, progress or 0.0, self.config)
        self.history.append((float(lr), new))
        return new_level, new

    def next_lr(self, features: np.ndarray, lr: float, progress: float | None = None) -> float:
        """The LR for the next ``action_every`` steps, from the LR in force ``lr`` (the level kept since
        :meth:`reset`)."""
        if self.first_val_loss is None:
            self.first_val_loss = val_loss_of(features)
        self.level, new = self.decide(features, lr, progress, self.level, self.first_val_loss)
        return new


class ControllerScheduler(LRScheduler):
    """A :class:`LearnedController` as a torch LR scheduler for any optimizer.

    It decides when the scheduler is built (step 0: ``observe_fn()`` then sees the untrained
    model, as a training episode's first observation does) and again after every
    ``controller.action_every``-th ``step()``: at steps 0, N, 2N, ... below ``total_steps``,
    the last block shortened to what is left, exactly as in training and ``evaluate-controller``.
    Call ``step()`` once after every ``optimizer.step()``; each decision asks ``observe_fn()``
    for the 7 paper features and sets every param group's LR; from ``total_steps`` on the last
    LR stays. ``total_steps`` (the run's length) gives time-aware controllers their progress
    feature and envelopes their position. ``state_dict()`` holds the step count, LRs and the
    level (not the controller or the callback); ``load_state_dict()`` also puts the saved LR
    back in force, which the controller's history alone cannot recompute.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, controller: LearnedController,
                 observe_fn: Callable[[], np.ndarray], total_steps: int | None = None, last_epoch: int = -1):
        if controller.needs_progress and not total_steps:
            raise ValueError(f"ControllerScheduler: a controller with {controller.features!r} features and envelope "
                             f"{controller.config.envelope!r} needs total_steps (the run's length) for its progress")
        self.controller, self.observe_fn, self.total_steps = controller, observe_fn, total_steps
        self.level: float | None = None  # the controller's level under an envelope, from the first decision on
        self.first_val_loss: float | None = None  # the first decision's validation loss (``anchored`` features)
        self.decided_at: int | None = None  # the step of the last decision: each step decides at most once
        super().__init__(optimizer, last_epoch)  # torch steps once here: last_epoch 0, the first decision

    def get_lr(self) -> list[float]:
        current = [float(g["lr"]) for g in self.optimizer.param_groups]
        step = self.last_epoch
        if step < 0 or step % self.controller.action_every or step == self.decided_at:
            return current
        if self.total_steps and step >= self.total_steps:  # the run is over: no block left to decide for
            return current
        progress = step / self.total_steps if self.total_steps else None
        features = self.observe_fn()
        if self.first_val_loss is None:
            self.first_val_loss = val_loss_of(features)
        self.level, lr = self.controller.decide(features, current[0], progress, self.level, self.first_val_loss)
        self.decided_at = step
        return [lr] * len(current)

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "controller", "observe_fn")}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr
