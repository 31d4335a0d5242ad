"""Paired statistics for arm-vs-baseline comparisons: pure math, numpy only.

Two arms run on the same held-out seeds share initial weights and batch order per seed,
so their per-seed differences remove seed noise (common random numbers). The mean
difference gets a percentile bootstrap 95% CI (resampling seeds with replacement), and the
verdict is read off the CI: entirely below zero is *better* (for a loss), entirely above
is *worse*, otherwise *no difference*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

BETTER, SAME, WORSE, TOO_FEW = "better", "no difference", "worse", "too few seeds"


@dataclass(frozen=True)
class Paired:
    """Per-seed ``arm - reference`` differences summarised: n pairs, mean, CI, verdict."""

    n: int
    mean: float
    ci_low: float
    ci_high: float
    verdict: str


def paired_differences(arm: Mapping[int, float], reference: Mapping[int, float]) -> np.ndarray:
    """``arm[s] - reference[s]`` over the seeds both have with finite values, in seed order."""
    seeds = sorted(s for s in set(arm) & set(reference)
                   if _finite(arm[s]) and _finite(reference[s]))
    return np.array([float(arm[s]) - float(reference[s]) for s in seeds], dtype=np.float64)


def bootstrap_ci(differences: np.ndarray, level: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean: resample the n differences with replacement
    ``resamples`` times, take the ``(1-level)/2`` and ``(1+level)/2`` quantiles of the means."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError("differences: give a non-empty 1-D array")
    if not 0 < level < 1:
        raise ValueError(f"level: {level!r} must be in (0, 1)")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def verdict(ci_low: float, ci_high: float, lower_is_better: bool = True) -> str:
    """better / no difference / worse for a CI of ``arm - reference``."""
    if ci_high < 0:
        return BETTER if lower_is_better else WORSE
    if ci_low > 0:
        return WORSE if lower_is_better else BETTER
    return SAME


def compare_paired(arm: Mapping[int, float], reference: Mapping[int, float], lower_is_better: bool = True,
                   level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> Paired:
    """The whole paired comparison; fewer than 2 common seeds give no CI and verdict ``too few seeds``."""
    d = paired_differences(arm, reference)
    if len(d) < 2:
        mean = float(d.mean()) if len(d) else math.nan
        return Paired(len(d), mean, math.nan, math.nan, TOO_FEW)
    low, high = bootstrap_ci(d, level, resamples, seed)
    return Paired(len(d), float(d.mean()), low, high, verdict(low, high, lower_is_better))


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
