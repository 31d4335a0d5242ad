"""ChildObserver: the 7 paper features of any classifier as it trains — the one implementation.

``ChildTrainer.observe`` uses it on its own child, and users put it in their own training
loops (with :class:`lrservice.control.controller.ControllerScheduler`). ``record(loss)`` after
every training step; calling the observer evaluates the model on a fixed validation batch and
returns the features (:func:`lrservice.child.features.observation_features`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lrservice.child.features import observation_features


def output_layer(model: torch.nn.Module) -> torch.nn.Module:
    """``model.head`` when it is a Linear (every lrservice model), else the model's last ``nn.Linear``."""
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Linear):
        return head
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError("ChildObserver: the model has no nn.Linear output layer; pass head=...")
    return linears[-1]


class ChildObserver:
    """Train loss since the last call, validation loss and logits statistics, head weights, LR.

    ``head`` is the output layer (default :func:`output_layer`); the LR is read from
    ``optimizer``. The prediction change is measured against the logits of the previous
    call (against zero the first time, as in the paper's re-implementation).
    """

    def __init__(self, model: torch.nn.Module, val_x: torch.Tensor, val_y: torch.Tensor,
                 optimizer: torch.optim.Optimizer, head: torch.nn.Module | None = None):
        self.model, self.val_x, self.val_y, self.optimizer = model, val_x, val_y, optimizer
        self.head = head if head is not None else output_layer(model)
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
        val_loss = float(F.cross_entropy(logits, self.val_y))
        train_loss = float(np.mean(self.losses)) if self.losses else val_loss
        feats = observation_features(train_loss, val_loss, logits, self.prev_logits,
                                     self.head.weight.detach(), float(self.optimizer.param_groups[0]["lr"]))
        self.prev_logits, self.losses = logits, []
        self.last_val_loss = val_loss
        self.last_val_accuracy = float((logits.argmax(dim=1) == self.val_y).float().mean())
        return feats
