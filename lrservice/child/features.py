"""The controller's observation: seven numbers describing how a child is training.

Definitions follow 1909.09712 and its public re-implementation: variances are taken
over every element of the validation logits; the first prediction change is measured
against zero (so it equals the prediction variance), as there.
"""

from __future__ import annotations

import numpy as np
import torch

FEATURE_NAMES = (
    "train_loss",          # mean training loss over the steps since the last observation
    "val_loss",            # cross-entropy on the fixed validation subset
    "pred_var",            # variance of the validation logits
    "pred_change_var",     # variance of (logits - logits at the previous observation)
    "head_weight_mean",    # mean of the output layer's weight matrix
    "head_weight_var",     # variance of the output layer's weight matrix
    "lr",                  # the learning rate in force
)


def observation_features(train_loss: float, val_loss: float, logits: torch.Tensor,
                         prev_logits: torch.Tensor | None, head_weight: torch.Tensor,
                         lr: float) -> np.ndarray:
    """The 7-vector in :data:`FEATURE_NAMES` order, as float32."""
    change = logits if prev_logits is None else logits - prev_logits
    return np.array([
        train_loss,
        val_loss,
        float(logits.var()),
        float(change.var()),
        float(head_weight.mean()),
        float(head_weight.var()),
        lr,
    ], dtype=np.float32)
