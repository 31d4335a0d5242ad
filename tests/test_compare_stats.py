"""Paired statistics against independent computations: exact bootstrap enumeration and SciPy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lrservice.stats import BETTER, SAME, TOO_FEW, WORSE, bootstrap_ci, compare_paired, paired_differences, verdict


def test_differences_pair_by_seed_and_skip_missing_or_nonfinite():
    arm = {0: 1.0, 1: 2.0, 2: math.nan, 3: 4.0, 9: 1.0}
    ref = {0: 0.5, 1: 2.5, 2: 1.0, 3: None, 4: 1.0}
    assert paired_differences(arm, ref).tolist() == [0.5, -0.5]


def test_ci_matches_exact_enumeration_of_all_resamples():
    """n=5: all 5**5 resamples are equally likely; their means' quantiles are the exact bootstrap CI.
    Monte-Carlo error of a 2.5% quantile with 20,000 resamples here is ~0.01; we allow 0.04."""
    d = np.array([-0.3, 0.1, 0.4, -0.2, 0.9])
    means = [np.mean(c) for c in itertools.product(d, repeat=len(d))]
    exact = np.quantile(means, [0.025, 0.975])
    low, high = bootstrap_ci(d, resamples=20_000, seed=1)
    assert low == pytest.approx(exact[0], abs=0.04) and high == pytest.approx(exact[1], abs=0.04)


def test_ci_matches_scipy_percentile_bootstrap():
    """Standard error of each endpoint ~0.008 (n=12, sd 1, 10,000 resamples); two estimates differ
    by ~0.011 sd; we allow 0.05."""
    scipy_stats = pytest.importorskip("scipy.stats")
    d = np.random.default_rng(3).normal(0.2, 1.0, size=12)
    ref = scipy_stats.bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=10_000,
                                method="percentile", random_state=np.random.default_rng(5)).confidence_interval
    low, high = bootstrap_ci(d, resamples=10_000, seed=7)
    assert low == pytest.approx(ref.low, abs=0.05) and high == pytest.approx(ref.high, abs=0.05)


def test_constant_differences_give_a_point_ci_and_the_right_verdict():
    assert bootstrap_ci(np.full(6, -0.25)) == pytest.approx((-0.25, -0.25))
    assert compare_paired({s: 1.0 for s in range(6)}, {s: 1.25 for s in range(6)}).verdict == BETTER
    assert compare_paired({s: 1.5 for s in range(6)}, {s: 1.25 for s in range(6)}).verdict == WORSE


def test_verdicts_read_off_the_ci():
    assert verdict(-0.3, -0.1) == BETTER and verdict(0.1, 0.3) == WORSE and verdict(-0.1, 0.1) == SAME
    assert verdict(0.1, 0.3, lower_is_better=False) == BETTER


def test_noise_around_zero_is_no_difference_and_one_seed_is_too_few():
    rng = np.random.default_rng(0)
    base = {s: float(v) for s, v in enumerate(rng.normal(1.0, 0.1, 10))}
    same = {s: v + float(e) for (s, v), e in zip(base.items(), [0.01, -0.01] * 5)}
    result = compare_paired(same, base)
    assert result.verdict == SAME and result.n == 10 and result.mean == pytest.approx(0.0, abs=1e-12)
    assert result.ci_low < 0 < result.ci_high
    one = compare_paired({0: 1.0}, {0: 2.0})
    assert one.verdict == TOO_FEW and one.n == 1 and one.mean == -1.0 and math.isnan(one.ci_low)
