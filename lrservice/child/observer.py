"""ChildObserver: the 7 paper features of any classifier as it trains — the one implementation.

``ChildTrainer.observe`` uses it on its own child, and users put it in their own training
loops (with :class:`lrservice.control.controller.ControllerScheduler`). ``record(loss)`` after
every training step; calling the observer evaluates the model on a fixed validation batch and
returns the features (:func:`lrservice.child.features.observation_features`).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lrservice.child.features import observation_features


def output_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The layer whose weights the paper features summarise (mean and variance).

    ``model.head`` when it has a ``weight`` parameter (every lrservice model; a plugin model names
    its output layer this way), else the last module, in registration order, that has one.
    """
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Module) and isinstance(getattr(head, "weight", None), torch.nn.Parameter):
        return head
    weighted = [m for m in model.modules() if isinstance(getattr(m, "weight", None), torch.nn.Parameter)]
    if not weighted:
        raise ValueError("ChildObserver: the model has no layer with a 'weight' parameter; name its output "
                         "layer 'head' or pass head=...")
    return weighted[-1]


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of class indices ``y`` under ``logits``."""
    return float((logits.argmax(dim=1) == y).float().mean())


class ChildObserver:
    """Train loss since the last call, validation loss and logits statistics, head weights, LR.

    ``head`` is the output layer (default :func:`output_layer`); the LR is read from
    ``optimizer``. The prediction change is measured against the logits of the previous
    call (against zero the first time, as in the paper's re-implementation). ``loss`` is the
    task's loss (default cross-entropy); accuracy is measured only when ``classification``.
    """

    def __init__(self, model: torch.nn.Module, val_x: torch.Tensor, val_y: torch.Tensor,
                 optimizer: torch.optim.Optimizer, head: torch.nn.Module | None = None,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                 classification: bool = True):
        self.model, self.val_x, self.val_y, self.optimizer = model, val_x, val_y, optimizer
        self.head = head if head is not None else output_layer(model)
        self.loss, self.classification = loss, classification
        self.reset()

    def record(self, loss: float) -> None:
        self.losses.append(float(loss))

    def reset(self) -> None:
        self.losses: list[float] = []
        self.prev_logits: torch.Tensor | None = None
        self.last_val_loss = self.last_val_accuracy = math.nan

    @torch.no_grad()
    def __call__(self) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        logits = self.model(self.val_x)
        self.model.train(was_training)
        val_loss = float(self.loss(logits, self.val_y))
        train_loss = float(np.mean(self.losses)) if self.losses else val_loss
        feats = observation_features(train_loss, val_loss, logits, self.prev_logits,
                                     self.head.weight.detach(), float(self.optimizer.param_groups[0]["lr"]))
        self.prev_logits, self.losses = logits, []
        self.last_val_loss = val_loss
        self.last_val_accuracy = accuracy(logits, self.val_y) if self.classification else math.nan
        return feats
