"""Paired statistics for "does arm A beat arm B": per-seed differences, bootstrap CI, verdict.

Pure numpy. A difference is ``a - b`` on the same seeds (same initial weights and batch
order), so seed-to-seed noise common to both arms cancels. The 95% interval is the
percentile bootstrap of the mean difference; the verdict says "better" only when the whole
interval lies on the better side of zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over paired seeds, its bootstrap CI and a verdict for ``a``."""

    mean: float
    low: float
    high: float
    n: int
    verdict: str  # "better", "worse" or "no difference" (for a, against b)


def bootstrap_ci(values, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def paired_difference(a, b, lower_is_better: bool = True, level: float = 0.95,
                      seed: int = 0) -> PairedDifference:
    """``a - b`` per seed (arrays in the same seed order); non-finite pairs are dropped."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: {a.shape} and {b.shape} are not paired")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    low, high = bootstrap_ci(d, level=level, seed=seed)
    if d.size == 0:
        verdict = "no difference"
    elif (high < 0) if lower_is_better else (low > 0):
        verdict = "better"
    elif (low > 0) if lower_is_better else (high < 0):
        verdict = "worse"
    else:
        verdict = "no difference"
    return PairedDifference(float(d.mean()) if d.size else float("nan"), low, high, int(d.size), verdict)
