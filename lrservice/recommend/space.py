"""Where the recommender looks: zoo parameters sampled from the budget and a base LR, composites, LR scaling.

Pure (numpy only, no Ray). Every sampled policy is a validated :class:`Policy` from
:mod:`lrservice.schedules`, so search candidates are exactly what a user can run later.

Ranges, for budget ``B`` and the LR range ``[lo, hi]`` around ``base`` (log-uniform draws):

- levels: a floor ``k0`` in ``[lo, base]`` and a peak ``k1`` in ``[base, hi]`` for two-level
  policies; a start ``k0`` in ``[base, hi]`` for decays (STEP, NSTEP, EXP, INV, SIG) and
  in ``[lo, hi]`` for FIX;
- periods ``l``: 5-50 % of ``B`` for cyclic and restart policies, 25-100 % for the cosine
  family (COS anneals over ``l``), 15-50 % for STEP; NSTEP gets two boundaries in 20-90 %;
- decays: ``gamma`` is chosen so the decay over the budget is meaningful: EXP falls to
  1-30 % of ``k0`` by step ``B``, the ``*EXP`` amplitudes to 1-50 %, INV to 2-30 %, STEP and
  NSTEP multiply by 0.1-0.6 per drop, SIG falls from ``k0`` around ``l`` = 30-80 % of ``B``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lrservice.schedules import POLICY_NAMES, Composite, Policy, make_policy

FIX_NAME = "FIX"
_DECAY_START = ("STEP", "NSTEP", "EXP", "INV", "SIG")
_COS_FAMILY = ("COS", "COS2", "COSEXP")


@dataclass(frozen=True)
class LrRange:
    """The reference LR (FIX's) and the range sampled learning rates span."""

    base: float
    lo: float
    hi: float


def _log(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _steps(fraction: float, budget: int) -> int:
    return max(1, int(round(fraction * budget)))


def sample_policy(name: str, rng: np.random.Generator, budget: int, lr: LrRange) -> Policy:
    """One zoo policy ``name`` with parameters drawn from the ranges in the module docstring."""
    if name == FIX_NAME:
        return make_policy(name, k0=_log(rng, lr.lo, lr.hi))
    if name == "POLY":
        return make_policy(name, k0=_log(rng, lr.lo / 10, lr.lo), k1=_log(rng, lr.base, lr.hi),
                           p=float(rng.uniform(0.5, 2.0)), l=budget)
    if name in _DECAY_START:
        k0 = _log(rng, lr.base, lr.hi)
        if name == "STEP":
            return make_policy(name, k0=k0, gamma=float(rng.uniform(0.1, 0.6)),
                               l=_steps(rng.uniform(0.15, 0.5), budget))
        if name == "NSTEP":
            bounds = sorted({_steps(f, budget) for f in rng.uniform(0.2, 0.9, size=2)})
            return make_policy(name, k0=k0, gamma=float(rng.uniform(0.1, 0.6)), l=bounds)
        if name == "EXP":
            return make_policy(name, k0=k0, gamma=_log(rng, 0.01, 0.3) ** (1 / budget))
        if name == "INV":
            p = float(rng.uniform(0.5, 1.0))
            ratio = _log(rng, 0.02, 0.3)
            return make_policy(name, k0=k0, gamma=(ratio ** (-1 / p) - 1) / budget, p=p)
        return make_policy(name, k0=k0, gamma=-float(rng.uniform(5, 20)) / budget,
                           l=_steps(rng.uniform(0.3, 0.8), budget))
    params = {"k0": _log(rng, lr.lo, lr.base), "k1": _log(rng, lr.base, lr.hi)}
    low, high = (0.25, 1.0) if name in _COS_FAMILY else (0.05, 0.5)
    params["l"] = _steps(rng.uniform(low, high), budget)
    if name.endswith("EXP"):
        params["gamma"] = _log(rng, 0.01, 0.5) ** (1 / budget)
    return make_policy(name, **params)


def search_policies(num_samples: int, budget: int, lr: LrRange, seed: int) -> list[Policy]:
    """``num_samples`` sampled policies, cycling through a seeded shuffle of the 34 names.

    With ``num_samples >= 34`` every zoo policy is tried at least once; fewer gives a random
    subset of distinct policies. The same arguments always give the same list (resume relies on it).
    """
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(POLICY_NAMES))
    return [sample_policy(str(order[i % len(order)]), rng, budget, lr) for i in range(num_samples)]


def fix_reference(lr: LrRange) -> Policy:
    """FIX at the base LR: the reference every recommendation is measured against."""
    return make_policy(FIX_NAME, k0=lr.base)


def scale_policy(policy: Policy | Composite, factor: float) -> Policy | Composite:
    """The same policy with its LR levels ``k0`` and ``k1`` multiplied by ``factor`` (every segment of a composite)."""
    if isinstance(policy, Composite):
        return Composite(tuple(scale_policy(s, factor) for s in policy.segments), policy.boundaries)
    params = dict(policy.to_dict())
    name = params.pop("name")
    for key in ("k0", "k1"):
        if key in params:
            params[key] = params[key] * factor
    return make_policy(name, **params)


def mean_lr(policy: Policy | Composite, start: int, stop: int) -> float:
    """The policy's mean LR over steps ``[start, stop)``."""
    return float(np.mean(policy.values(range(start, stop))))


def anneal_after(policy: Policy | Composite, boundary: int, budget: int) -> Composite:
    """``policy`` until ``boundary``, then a cosine decay from its mean LR so far down to 0 at the budget.

    This is the "explore high, then settle" composition: the second segment restarts its
    clock at the boundary (COS with ``l = budget - boundary``).
    """
    level = mean_lr(policy, 0, boundary)
    tail = make_policy("COS", k0=0.0, k1=level, l=budget - boundary)
    return Composite((policy, tail), (boundary,))


def compose_candidates(ranked: list[Policy | Composite], budget: int, fractions: tuple[float, ...],
                       limit: int) -> list[Composite]:
    """Composites built from the best searched policies (best first), at most ``limit``.

    In order: the best policy annealed after each boundary fraction; the best then the
    second best (LRBench's composition of two selected policies) at the first fraction;
    the second best annealed after the first fraction. Duplicates are dropped.
    """
    if not ranked or limit <= 0 or not fractions:
        return []
    bounds = [b for b in dict.fromkeys(_steps(f, budget) for f in fractions) if 0 < b < budget]
    if not bounds:
        return []
    best = ranked[0]
    out = [anneal_after(best, b, budget) for b in bounds]
    if len(ranked) > 1:
        second = ranked[1]
        out.append(Composite((best, second), (bounds[0],)))
        out.append(anneal_after(second, bounds[0], budget))
    unique: dict[str, Composite] = {}
    for c in out:
        unique.setdefault(repr(c.to_dict()), c)
    return list(unique.values())[:limit]


def describe(policy: Policy | Composite) -> str:
    """A short human label: ``COS(k0=1e-4, k1=0.01, l=100)`` or ``FIX(...) | COS(...) @ [100]``."""
    if isinstance(policy, Composite):
        return " | ".join(describe(s) for s in policy.segments) + f" @ {list(policy.boundaries)}"
    args = ", ".join(f"{k}={_fmt(v)}" for k, v in policy.params.items())
    return f"{policy.name}({args})"


def _fmt(value) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return f"{value:.3g}" if isinstance(value, float) else str(value)
