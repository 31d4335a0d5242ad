"""LRBench's metrics for judging a learning-rate policy: utility, cost and robustness.

Pure functions over tensors and numbers (no Ray, no I/O), so the recommender, the Tune
comparison and tests share one definition:

- :func:`utility`: top-1/top-5 accuracy and prediction confidence from logits.
- :func:`cost`: steps and wall-clock seconds until a target accuracy is first reached.
- :func:`loss_gap`: test loss minus train loss (over-fitting).
- :func:`lr_sensitivity`: accuracy change when the policy's base LR is scaled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch


def _topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of samples whose label is among the ``k`` highest logits (``k`` capped at the class count)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels.unsqueeze(1)).any(dim=1).double().mean())


def utility(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy and confidence of a classifier's outputs (LRBench's utility metrics).

    ``logits`` is ``[n, classes]``, ``labels`` is ``[n]`` of class indices. Returns:

    - ``top1``, ``top5``: top-k accuracy; ``k`` is capped at the number of classes, so with
      five or fewer classes ``top5`` is 1.0.
    - ``conf_mean_correct``, ``conf_std_correct``: mean and population std (ddof 0) of
      ``max softmax probability`` over the correctly classified samples (top-1 correct);
      ``None`` when no sample is correct.
    - ``class_conf_spread``: for each class ``c`` that occurs in ``labels``, ``m_c`` is the
      mean softmax probability given to the true class over the samples labelled ``c``;
      the spread is the population std (ddof 0) of the ``m_c``. 0 means every class is
      learned equally confidently; classes absent from ``labels`` are left out.
    """
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"utility: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} "
                         "must be [n, classes] and [n] with n > 0")
    if logits.shape[0] == 0:
        raise ValueError("utility: give at least one sample")
    logits = logits.detach().double()
    labels = labels.detach().long()
    probs = torch.softmax(logits, dim=1)
    conf, pred = probs.max(dim=1)
    correct = pred == labels
    if correct.any():
        chosen = conf[correct]
        conf_mean = float(chosen.mean())
        conf_std = float(chosen.std(unbiased=False))
    else:
        conf_mean = conf_std = None
    true_conf = probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    per_class = torch.stack([true_conf[labels == c].mean() for c in labels.unique()])
    return {
        "top1": float(correct.double().mean()),
        "top5": _topk_accuracy(logits, labels, 5),
        "conf_mean_correct": conf_mean,
        "conf_std_correct": conf_std,
        "class_conf_spread": float(per_class.std(unbiased=False)),
    }


def cost(steps: Sequence[int], accuracies: Sequence[float], seconds: Sequence[float] | None,
         target: float) -> dict:
    """Steps and seconds at the first evaluation whose accuracy is ``>= target``.

    ``steps``, ``accuracies`` and ``seconds`` are parallel, in evaluation order; ``seconds``
    is elapsed wall time (or ``None`` when not measured). Both values are ``None`` if the
    target is never reached.
    """
    if len(steps) != len(accuracies) or (seconds is not None and len(seconds) != len(steps)):
        raise ValueError(f"cost: steps ({len(steps)}), accuracies ({len(accuracies)}) and seconds "
                         f"({None if seconds is None else len(seconds)}) must have the same length")
    for i, acc in enumerate(accuracies):
        if acc is not None and math.isfinite(acc) and acc >= target:
            return {"steps_to_target": int(steps[i]),
                    "seconds_to_target": None if seconds is None else float(seconds[i])}
    return {"steps_to_target": None, "seconds_to_target": None}


def loss_gap(train_loss: float, test_loss: float) -> float:
    """``test_loss - train_loss``: positive when the child over-fits."""
    return float(test_loss) - float(train_loss)


def sensitivity_key(scale: float) -> str:
    """The column name for one LR scale factor: ``acc_delta_x0.1``, ``acc_delta_x5``, ..."""
    return f"acc_delta_x{float(scale):g}"


def lr_sensitivity(base_accuracy: float, scaled: Mapping[float, float]) -> dict:
    """Accuracy change for each base-LR scale factor: ``{acc_delta_x<s>: scaled[s] - base_accuracy}``.

    ``scaled`` maps a scale factor (e.g. 0.1, 0.5, 5, 10) to the final accuracy reached with
    the policy's base LR multiplied by it. Also returns ``acc_delta_worst``, the most negative
    change (or 0.0 when none is negative; ``None`` when ``scaled`` is empty): how much
    accuracy a user loses by getting the base LR wrong within that range.
    """
    out = {sensitivity_key(s): float(acc) - float(base_accuracy) for s, acc in sorted(scaled.items())}
    out["acc_delta_worst"] = min([0.0, *out.values()]) if out else None
    return out
