"""Paired statistics against independent computations."""

from __future__ import annotations

import numpy as np
import pytest

from lrservice.compare.stats import bootstrap_ci, paired_difference


def test_bootstrap_ci_of_a_constant_is_the_constant():
    assert bootstrap_ci([0.3] * 7) == pytest.approx((0.3, 0.3))


def test_bootstrap_ci_brackets_the_mean_like_a_t_interval():
    rng = np.random.default_rng(4)
    x = rng.normal(0.5, 1.0, size=400)
    low, high = bootstrap_ci(x)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)  # normal approximation, independent of resampling
    assert low == pytest.approx(x.mean() - half, abs=0.25 * half)
    assert high == pytest.approx(x.mean() + half, abs=0.25 * half)


def test_verdicts_follow_the_interval_and_direction():
    a = np.array([1.0, 1.1, 0.9, 1.05, 0.95])
    assert paired_difference(a - 0.5, a).verdict == "better"
    assert paired_difference(a + 0.5, a).verdict == "worse"
    assert paired_difference(a + 0.5, a, lower_is_better=False).verdict == "better"
    noisy = paired_difference(a + np.array([0.2, -0.2, 0.1, -0.1, 0.0]), a)
    assert noisy.verdict == "no difference" and noisy.low < 0 < noisy.high
    d = paired_difference([1.0, np.nan, 3.0], [0.5, 1.0, 2.0])
    assert d.n == 2 and d.mean == pytest.approx(0.75)
    with pytest.raises(ValueError, match="not paired"):
        paired_difference([1.0], [1.0, 2.0])
