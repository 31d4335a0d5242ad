"""LRBench metrics against hand-computed values on small tensors."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from lrservice.recommend.metrics import cost, loss_gap, lr_sensitivity, sensitivity_key, utility


def _logits(probs):
    """Logits whose softmax is exactly ``probs`` (rows sum to 1)."""
    return torch.tensor(probs, dtype=torch.float64).log()


PROBS = [
    [0.7, 0.2, 0.1],  # label 0: correct, confidence 0.7, true-class 0.7
    [0.1, 0.6, 0.3],  # label 1: correct, confidence 0.6, true-class 0.6
    [0.5, 0.3, 0.2],  # label 1: wrong (predicts 0), true-class 0.3
    [0.2, 0.2, 0.6],  # label 2: correct, confidence 0.6, true-class 0.6
]
LABELS = [0, 1, 1, 2]


def test_utility_hand_computed():
    u = utility(_logits(PROBS), torch.tensor(LABELS))
    assert u["top1"] == pytest.approx(3 / 4)
    assert u["top5"] == 1.0  # k capped at 3 classes
    assert u["conf_mean_correct"] == pytest.approx((0.7 + 0.6 + 0.6) / 3)
    assert u["conf_std_correct"] == pytest.approx(statistics.pstdev([0.7, 0.6, 0.6]))
    # per-class mean true-class confidence: c0 0.7, c1 (0.6 + 0.3) / 2, c2 0.6
    assert u["class_conf_spread"] == pytest.approx(statistics.pstdev([0.7, 0.45, 0.6]))


def test_utility_top5_with_more_classes():
    # 7 classes; logits descending 6..0, so class c has rank c (0 = best).
    row = torch.arange(6, -1, -1, dtype=torch.float64)
    logits = row.repeat(3, 1)
    labels = torch.tensor([4, 5, 6])  # ranks 5, 6, 7: only the first is in the top 5
    u = utility(logits, labels)
    assert u["top1"] == 0.0
    assert u["top5"] == pytest.approx(1 / 3)


def test_utility_none_correct_is_none_not_nan():
    u = utility(_logits([[0.9, 0.1], [0.8, 0.2]]), torch.tensor([1, 1]))
    assert u["top1"] == 0.0
    assert u["conf_mean_correct"] is None and u["conf_std_correct"] is None
    assert u["class_conf_spread"] == 0.0  # one class present
    assert not any(isinstance(v, float) and math.isnan(v) for v in u.values())


def test_utility_single_correct_has_zero_std():
    u = utility(_logits([[0.9, 0.1], [0.8, 0.2]]), torch.tensor([0, 1]))
    assert u["conf_mean_correct"] == pytest.approx(0.9)
    assert u["conf_std_correct"] == 0.0
    assert u["class_conf_spread"] == pytest.approx(statistics.pstdev([0.9, 0.2]))


def test_utility_rejects_bad_shapes():
    with pytest.raises(ValueError, match="utility"):
        utility(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))


def test_cost_first_crossing():
    c = cost([10, 20, 30, 40], [0.5, 0.89, 0.9, 0.95], [1.0, 2.5, 3.5, 4.0], 0.9)
    assert c == {"steps_to_target": 30, "seconds_to_target": 3.5}  # >= target counts


def test_cost_never_reached_and_no_seconds():
    assert cost([10, 20], [0.5, 0.6], None, 0.9) == {"steps_to_target": None, "seconds_to_target": None}
    assert cost([10, 20], [0.5, 0.95], None, 0.9) == {"steps_to_target": 20, "seconds_to_target": None}
    assert cost([10, 20], [float("nan"), 0.95], None, 0.9)["steps_to_target"] == 20
    with pytest.raises(ValueError, match="same length"):
        cost([10, 20], [0.5], None, 0.9)


def test_loss_gap_and_sensitivity():
    assert loss_gap(0.25, 0.75) == pytest.approx(0.5)
    assert loss_gap(0.75, 0.25) == pytest.approx(-0.5)
    s = lr_sensitivity(0.9, {0.1: 0.8, 0.5: 0.88, 5: 0.92, 10: 0.5})
    assert s["acc_delta_x0.1"] == pytest.approx(-0.1)
    assert s["acc_delta_x0.5"] == pytest.approx(-0.02)
    assert s["acc_delta_x5"] == pytest.approx(0.02)
    assert s["acc_delta_x10"] == pytest.approx(-0.4)
    assert s["acc_delta_worst"] == pytest.approx(-0.4)
    assert sensitivity_key(10) == "acc_delta_x10" and sensitivity_key(0.5) == "acc_delta_x0.5"
    assert lr_sensitivity(0.9, {5: 0.95})["acc_delta_worst"] == 0.0
    assert lr_sensitivity(0.9, {})["acc_delta_worst"] is None
