"""The child-pool contract: K children of one task behind one interface, batched or not.

:class:`~lrservice.child.batched.BatchedChildTrainer` trains K children as one stacked
computation (any model ``torch.func`` can vmap, BatchNorm included); :class:`SeparateChildren`
keeps K ordinary :class:`~lrservice.child.trainer.ChildTrainer` objects (any model at all). Both
offer the same methods, so the controller's episodes (:mod:`lrservice.control.episodes`) and its
evaluation run unchanged on either; :func:`child_pool` picks the batched one when the model
passes the vmap trial, and ``pool.mode`` says which it got (and why not batched) for progress lines.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch

from lrservice.child.batched import BatchedChildTrainer, NotBatchable
from lrservice.child.data import ChildData
from lrservice.child.features import NUM_FEATURES
from lrservice.child.trainer import ChildTrainer, Evaluation, TrainResult, load_task_data
from lrservice.config import TaskConfig


class ChildPool(Protocol):
    """K children of one task; child ``i`` has its own LR, seed, optimizer state and batch order."""

    task: TaskConfig
    k: int
    mode: str  # "batched (vmap)", "batched (mlp fast path)", "separate" or "separate: <why not batched>"

    def reset_child(self, i: int, lr: float, seed: int) -> None: ...
    @property
    def lrs(self) -> np.ndarray: ...
    def set_lr(self, i: int, value: float) -> None: ...
    @property
    def step(self) -> np.ndarray: ...
    @property
    def diverged(self) -> np.ndarray: ...
    def train_steps(self, k: int, lrs=None, children: Sequence[int] | None = None) -> list[TrainResult]: ...
    def observe(self, children: Sequence[int] | None = None) -> tuple[np.ndarray, list[Evaluation]]: ...
    def evaluate(self, split: str = "val") -> list[Evaluation]: ...
    def logits(self, x: torch.Tensor) -> torch.Tensor: ...
    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class SeparateChildren:
    """K :class:`ChildTrainer` objects behind the :class:`ChildPool` interface (one data copy).

    ``reason`` is why the children are not batched, shown in ``mode``.
    """

    def __init__(self, task: TaskConfig, num_children: int, data: ChildData | None = None,
                 device: str | None = None, reason: str | None = None):
        self.task, self.k = task, num_children
        self.mode = "separate" if reason is None else f"separate: {reason}"
        first = ChildTrainer(task, data=data, device=device)
        self.children = [first] + [ChildTrainer(task, data=first.data, device=str(first.device))
                                   for _ in range(num_children - 1)]
        self._last = np.zeros((num_children, NUM_FEATURES), dtype=np.float32)
        self._last_eval = [Evaluation(float("nan"), float("nan"))] * num_children

    def reset_child(self, i: int, lr: float, seed: int, optimizer_factory=None) -> None:
        """As ``ChildTrainer.reset``; ``optimizer_factory`` gives this child another optimizer than the task's."""
        self.children[i].reset(lr, seed, optimizer_factory=optimizer_factory)

    @property
    def lrs(self) -> np.ndarray:
        return np.array([c.lr for c in self.children], dtype=np.float64)

    @lrs.setter
    def lrs(self, values) -> None:
        for c, v in zip(self.children, np.broadcast_to(np.asarray(values, dtype=np.float64), (self.k,))):
            c.lr = float(v)

    def set_lr(self, i: int, value: float) -> None:
        self.children[i].lr = float(value)

    @property
    def step(self) -> np.ndarray:
        return np.array([c.step for c in self.children], dtype=np.int64)

    @property
    def diverged(self) -> np.ndarray:
        return np.array([c.diverged for c in self.children], dtype=bool)

    def train_steps(self, k: int, lrs=None, children: Sequence[int] | None = None) -> list[TrainResult]:
        if lrs is not None:
            self.lrs = lrs
        chosen = set(range(self.k) if children is None else children)
        return [c.train_steps(k) if i in chosen else TrainResult(float("nan"), 0, c.diverged)
                for i, c in enumerate(self.children)]

    def observe(self, children: Sequence[int] | None = None) -> tuple[np.ndarray, list[Evaluation]]:
        """As ``BatchedChildTrainer.observe``: rows of children not named are their last observation."""
        for i in (range(self.k) if children is None else children):
            self._last[i], self._last_eval[i] = self.children[i].observe()
        return self._last.copy(), list(self._last_eval)

    def evaluate(self, split: str = "val") -> list[Evaluation]:
        return [c.evaluate(split) for c in self.children]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every child's logits on the same inputs: ``(K, N, C)``, as ``BatchedChildTrainer.logits``."""
        return torch.stack([c.logits(x) for c in self.children])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.children[0].split(name)

    def state_dict(self) -> dict:
        """Every child's :meth:`ChildTrainer.state_dict` (reset the children before loading it)."""
        return {"children": [c.state_dict() for c in self.children]}

    def load_state_dict(self, state: dict) -> None:
        for c, s in zip(self.children, state["children"], strict=True):
            c.load_state_dict(s)


def child_pool(task: TaskConfig, num_children: int, data: ChildData | None = None,
               device: str | None = None) -> ChildPool:
    """K children of ``task``: batched when the model passes the vmap trial, else separate trainers."""
    data = data or load_task_data(task)
    try:
        return BatchedChildTrainer(task, num_children, data=data, device=device)
    except NotBatchable as exc:
        return SeparateChildren(task, num_children, data=data, device=device, reason=exc.reason)


def pool_mode(task: TaskConfig, data: ChildData | None = None, device: str | None = None) -> str:
    """What :func:`child_pool` gives this task's children (``ChildPool.mode``), decided the same way."""
    return child_pool(task, 1, data=data, device=device).mode
