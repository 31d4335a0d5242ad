"""ChildTrainer: train a child network k steps at a time at a given LR, evaluate, observe.

This is the one training loop every part of lrservice shares: the controller's env,
Tune trials and the recommender. Batches are drawn from in-memory tensors by a seeded
epoch permutation, so a run is reproducible from ``(task, seed)`` and a step costs one
forward/backward. A non-finite loss marks the child as diverged instead of raising.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from lrservice.child.data import ChildData, load_dataset
from lrservice.child.models import task_model
from lrservice.child.names import LOSSES
from lrservice.child.observer import ChildObserver, accuracy
from lrservice.child.plugins import resolve
from lrservice.config import TaskConfig

EVAL_CHUNK = 2048


@dataclass(frozen=True)
class TrainResult:
    """Outcome of a block of steps: mean loss of the steps taken and whether the child diverged."""

    mean_loss: float
    steps: int
    diverged: bool


@dataclass(frozen=True)
class Evaluation:
    """Loss and top-1 accuracy on a split."""

    loss: float
    accuracy: float


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when this process can see a GPU, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("task.device: 'cuda' was asked for but this process sees no GPU; use 'auto' or 'cpu'")
    return torch.device(name)


def _data_fields(task: TaskConfig) -> tuple:
    """The task fields that decide its data, as hashable values: dataset and its args, data directory,
    download, val_size, max_train_samples, plugin directories, whether targets are class indices."""
    return (task.dataset, json.dumps(task.dataset_args, sort_keys=True, default=str), str(task.data_path),
            task.download, task.val_size, task.max_train_samples, tuple(task.plugin_dirs), task.is_classification)


def _load(dataset: str, args: str, root: str, download: bool, val_size: int, max_train_samples: int | None,
          plugin_dirs: tuple[str, ...], classification: bool) -> ChildData:
    return load_dataset(dataset, root, download=download, val_size=val_size, split_seed=0,
                        max_train_samples=max_train_samples, args=json.loads(args), plugin_dirs=plugin_dirs,
                        classification=classification)


_cached_load = lru_cache(maxsize=2)(_load)  # keyed on plain values; a process switching tasks keeps at most two


def load_task_data(task: TaskConfig) -> ChildData:
    """The task's dataset, split with the fixed split seed (0) so every run sees the same splits."""
    return _load(*_data_fields(task))


def cached_task_data(task: TaskConfig) -> ChildData:
    """:func:`load_task_data`, once per process for the fields that decide the data: env resets,
    reused Tune actors and trials share it. Every caller shares the same tensors, so none may modify
    them in place."""
    return _cached_load(*_data_fields(task))


def task_loss(task: TaskConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The task's loss ``loss(outputs, targets) -> mean over the batch`` (cross-entropy by default)."""
    return resolve("task.loss", task.loss, LOSSES, task.plugin_dirs, "loss")


def make_optimizer(task: TaskConfig, params, lr: float) -> torch.optim.Optimizer:
    """Adam (default), plain SGD, or SGD with momentum, as the task names."""
    if task.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=task.weight_decay)
    momentum = task.momentum if task.optimizer == "momentum" else 0.0
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=task.weight_decay)


class ChildTrainer:
    """Trains one child network; the LR is whatever the caller (schedule or controller) sets."""

    def __init__(self, task: TaskConfig, data: ChildData | None = None, device: str | None = None):
        self.task = task
        self.device = resolve_device(device or task.device)
        self.data = (data or load_task_data(task)).to(self.device)
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.step = 0
        self.observer: ChildObserver | None = None
        self.diverged = False
        self.loss = task_loss(task)

    # -- lifecycle -------------------------------------------------------------------------
    def reset(self, lr: float, seed: int | None = None,
              optimizer_factory: Callable[..., torch.optim.Optimizer] | None = None) -> None:
        """Fresh weights and optimizer state from ``seed`` (default: the task's seed).

        ``optimizer_factory(params, lr)`` builds another optimizer than the task's (an
        optimizer-level arm kind, e.g. Schedule-Free AdamW).
        """
        seed = self.task.seed if seed is None else seed
        torch.manual_seed(seed)
        self.model = task_model(self.task, self.data.input_shape, self.data.num_classes).to(self.device)
        factory = optimizer_factory or (lambda params, lr: make_optimizer(self.task, params, lr))
        self.optimizer = factory(self.model.parameters(), lr)
        self._batch_gen = torch.Generator().manual_seed(seed + 1_000_003)
        self._order = torch.empty(0, dtype=torch.int64)
        self._cursor = 0
        self.step = 0
        self.observer = ChildObserver(self.model, *self.split("val_subset"), self.optimizer, loss=self.loss,
                                      classification=self.task.is_classification)
        self.diverged = False

    def state_dict(self) -> dict:
        """Everything needed to continue this child exactly: weights, optimizer, batch order and cursor, step.

        Tune trials save it in checkpoints so that a retried or resumed trial sees the same batches.
        """
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "batch_gen": self._batch_gen.get_state(),
            "order": self._order.clone(),
            "cursor": self._cursor,
            "step": self.step,
            "prev_logits": None if self.observer.prev_logits is None else self.observer.prev_logits.cpu(),
            "losses_since_observe": list(self.observer.losses),
            "diverged": self.diverged,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`; call :meth:`reset` first so the model and optimizer exist."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._batch_gen.set_state(state["batch_gen"])
        self._order = state["order"].clone()
        self._cursor = int(state["cursor"])
        self.step = int(state["step"])
        prev = state["prev_logits"]
        self.observer.prev_logits = None if prev is None else prev.to(self.device)
        self.observer.losses = list(state["losses_since_observe"])
        self.diverged = bool(state["diverged"])

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = float(value)

    @property
    def head_weight(self) -> torch.Tensor:
        return self.observer.head.weight.detach()

    # -- training --------------------------------------------------------------------------
    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.data.train_x.shape[0]
        size = min(self.task.batch_size, n)
        if self._cursor + size > len(self._order):
            self._order = torch.randperm(n, generator=self._batch_gen)
            self._cursor = 0
        idx = self._order[self._cursor:self._cursor + size].to(self.device)
        self._cursor += size
        return self.data.train_x[idx], self.data.train_y[idx]

    def train_steps(self, k: int, lr: float | None = None,
                    after_step: Callable[[int, float], None] | None = None) -> TrainResult:
        """Run up to ``k`` optimizer steps; stop early (``diverged``) on a non-finite loss.

        ``after_step(step, loss)`` runs after every step, e.g. to step a torch LR scheduler.
        """
        if self.model is None:
            raise RuntimeError("ChildTrainer.reset(lr) must be called before training")
        if lr is not None:
            self.lr = lr
        self._optimizer_mode("train")
        self.model.train()
        total, taken = 0.0, 0
        for _ in range(k):
            x, y = self._next_batch()
            loss = self.loss(self.model(x), y)
            value = float(loss.detach())
            if not math.isfinite(value):
                self.diverged = True
                break
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            taken += 1
            total += value
            self.observer.record(value)
            if after_step is not None:
                after_step(self.step, value)
        mean = total / taken if taken else float("nan")
        return TrainResult(mean_loss=mean, steps=taken, diverged=self.diverged)

    def _optimizer_mode(self, mode: str) -> None:
        """Schedule-free optimizers train at one point and are evaluated at another: they offer
        ``train()``/``eval()`` (torch's optimizers do not), called before training and before every
        evaluation or observation; switching to the mode already in force changes nothing."""
        switch = getattr(self.optimizer, mode, None)
        if callable(switch):
            switch()

    # -- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self._optimizer_mode("eval")
        self.model.eval()
        return torch.cat([self.model(x[i:i + EVAL_CHUNK]) for i in range(0, x.shape[0], EVAL_CHUNK)])

    def evaluate(self, split: str = "val") -> Evaluation:
        """The task's loss and (classification) accuracy on ``train``, ``val``, ``val_subset`` or ``test``."""
        x, y = self.split(split)
        out = self.logits(x)
        loss = float(self.loss(out, y))
        acc = accuracy(out, y) if self.task.is_classification else math.nan
        return Evaluation(loss=loss, accuracy=acc)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`ChildData.split`."""
        return self.data.split(name, self.task.val_subset)

    def observe(self) -> tuple[np.ndarray, Evaluation]:
        """The 7 controller features (:class:`ChildObserver`) and the validation-subset evaluation they include.

        Train loss is the mean since the previous observation; the prediction change is
        measured against the logits seen at that observation.
        """
        self._optimizer_mode("eval")
        feats = self.observer()
        val = Evaluation(loss=self.observer.last_val_loss, accuracy=self.observer.last_val_accuracy)
        if not math.isfinite(val.loss):
            self.diverged = True
        return feats, val
