"""The controller's observation: numbers describing how a child is training.

``paper`` is the seven features of 1909.09712 and its public re-implementation: variances
are taken over every element of the validation logits; the first prediction change is
measured against zero (so it equals the prediction variance), as there.

``extended`` adds what a schedule needs and the paper's set lacks: the fraction of training
done (annealing is a decision about time left) and the LR and both losses on a log scale
(multiplicative quantities whose raw values span decades).

``invariant`` keeps only what means the same on any task: progress, log10 LR, the
generalisation gap log(val/train loss) and how far the predictions moved since the last
observation relative to their spread. No loss level, logit scale or weight statistic, whose
values differ between tasks (a controller that keys on them does not transfer).

``anchored`` is ``invariant`` plus one column that tells tasks apart without a task-dependent
scale: log(validation loss / the validation loss at the run's first observation). The first
observation is of the untrained child (a classifier's is near chance level on any task), so
the column says how far this run has come — MNIST-1D's MLPs end near log(0.5), digits' near
log(0.03) — for any loss. It needs state (the first value), which the callers keep per run:
:class:`lrservice.control.episodes.EpisodeBatch` per env, :class:`LearnedController` and
:class:`ControllerScheduler` since their last reset.
"""

from __future__ import annotations

from typing import Mapping, TypeVar

import numpy as np
import torch

T = TypeVar("T")

FEATURE_NAMES = (
    "train_loss",          # mean training loss over the steps since the last observation
    "val_loss",            # cross-entropy on the fixed validation subset
    "pred_var",            # variance of the validation logits
    "pred_change_var",     # variance of (logits - logits at the previous observation)
    "head_weight_mean",    # mean of the output layer's weight matrix
    "head_weight_var",     # variance of the output layer's weight matrix
    "lr",                  # the learning rate in force
)
NUM_FEATURES = len(FEATURE_NAMES)  # the width of a paper-feature row
COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}  # a paper feature's column in a row
EXTENDED_NAMES = FEATURE_NAMES + (
    "progress",            # child steps done / steps in the episode, in [0, 1]
    "log10_lr",
    "log_train_loss",
    "log_val_loss",
)
INVARIANT_NAMES = (
    "progress",
    "log10_lr",
    "log_val_over_train_loss",   # log(val_loss / train_loss)
    "log_pred_change_ratio",     # log(pred_change_var / pred_var)
)
ANCHORED_NAMES = INVARIANT_NAMES + (
    "log_val_loss_over_first",   # log(val_loss / val_loss at the run's first observation)
)
FEATURE_SETS = {"paper": FEATURE_NAMES, "extended": EXTENDED_NAMES, "invariant": INVARIANT_NAMES,
                "anchored": ANCHORED_NAMES}
LEVEL_NAME = "log10_level"  # appended to any set under an envelope: the level the controller moves
LOSS_FLOOR = 1e-8  # log of a loss that reached 0 stays finite
VAR_FLOOR = 1e-12  # log of a variance that is 0 stays finite


def in_feature_order(columns: Mapping[str, T]) -> list[T]:
    """The values of ``columns`` (feature name -> value) in :data:`FEATURE_NAMES` order.

    Both implementations of the paper features (:func:`observation_features` and the batched
    trainer's) build their rows through it, so a row's order is the table's and a feature added
    to :data:`FEATURE_NAMES` but not computed (or computed but not named) fails at once.
    """
    if set(columns) != set(FEATURE_NAMES):
        missing, extra = set(FEATURE_NAMES) - set(columns), set(columns) - set(FEATURE_NAMES)
        raise ValueError(f"paper features: missing {sorted(missing)}, not in FEATURE_NAMES {sorted(extra)}")
    return [columns[name] for name in FEATURE_NAMES]


def observation_features(train_loss: float, val_loss: float, logits: torch.Tensor,
                         prev_logits: torch.Tensor | None, head_weight: torch.Tensor,
                         lr: float) -> np.ndarray:
    """The paper features as a :data:`NUM_FEATURES`-vector in :data:`FEATURE_NAMES` order, as float32."""
    change = logits if prev_logits is None else logits - prev_logits
    return np.array(in_feature_order({
        "train_loss": train_loss,
        "val_loss": val_loss,
        "pred_var": float(logits.var()),
        "pred_change_var": float(change.var()),
        "head_weight_mean": float(head_weight.mean()),
        "head_weight_var": float(head_weight.var()),
        "lr": lr,
    }), dtype=np.float32)


def val_loss_of(paper: np.ndarray) -> float:
    """The validation loss of one row of paper features: what a run's first observation anchors (``anchored``)."""
    return float(np.asarray(paper).reshape(NUM_FEATURES)[COLUMN["val_loss"]])


def feature_set(paper: np.ndarray, progress: np.ndarray | float, name: str,
                level: np.ndarray | float | None = None,
                first_val_loss: np.ndarray | float | None = None) -> np.ndarray:
    """Rows of paper features ``(..., NUM_FEATURES)`` as the named set: ``paper`` as is, ``extended`` with 4 more
    columns, ``invariant`` 4 columns computed from them, ``anchored`` those and the validation loss
    relative to ``first_val_loss`` (the run's first observation's; required for that set).

    ``level`` (a controller steering an envelope) appends :data:`LEVEL_NAME`, log10 of it: the
    LR in force alone does not say where the level is once the envelope has decayed.
    """
    paper = np.asarray(paper, dtype=np.float64)
    if name not in FEATURE_SETS:
        raise ValueError(f"features: {name!r} is not allowed; choose one of: {', '.join(FEATURE_SETS)}")
    if name == "paper":
        rows = paper
    elif name == "extended":
        rows = _extended(paper, progress)
    elif name == "invariant":
        rows = _invariant(paper, progress)
    else:
        if first_val_loss is None:
            raise ValueError(f"features {name!r}: the run's first validation loss is needed (first_val_loss)")
        first = np.broadcast_to(np.asarray(first_val_loss, dtype=np.float64), paper.shape[:-1])
        relative = _log_loss(paper[..., COLUMN["val_loss"]]) - _log_loss(first)
        rows = np.concatenate([_invariant(paper, progress), relative[..., None]], axis=-1)
    if level is not None:
        column = np.broadcast_to(np.log10(np.maximum(np.asarray(level, dtype=np.float64), 1e-30)), paper.shape[:-1])
        rows = np.concatenate([rows, column[..., None]], axis=-1)
    return rows.astype(np.float32)


def _extended(paper: np.ndarray, progress: np.ndarray | float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        extra = np.stack([
            np.broadcast_to(np.asarray(progress, dtype=np.float64), paper.shape[:-1]),
            np.log10(np.maximum(paper[..., COLUMN["lr"]], 1e-30)),
            _log_loss(paper[..., COLUMN["train_loss"]]),
            _log_loss(paper[..., COLUMN["val_loss"]]),
        ], axis=-1)
    return np.concatenate([paper, extra], axis=-1)


def _log_loss(loss: np.ndarray) -> np.ndarray:
    """The log of a loss, floored at :data:`LOSS_FLOOR` (the one definition every log-loss column uses)."""
    return np.log(np.maximum(loss, LOSS_FLOOR))


def _invariant(paper: np.ndarray, progress: np.ndarray | float) -> np.ndarray:
    """From the extended columns (one definition of progress, log LR and log losses)."""
    done, log10_lr, log_train, log_val = np.moveaxis(_extended(paper, progress)[..., NUM_FEATURES:], -1, 0)
    change_var, pred_var = paper[..., COLUMN["pred_change_var"]], paper[..., COLUMN["pred_var"]]
    log_change_ratio = np.log(np.maximum(change_var, VAR_FLOOR)) - np.log(np.maximum(pred_var, VAR_FLOOR))
    return np.stack([done, log10_lr, log_val - log_train, log_change_ratio], axis=-1)
