"""The LRBench policy zoo: 34 learning-rate policies as pure functions of the step.

Each policy is ``lr = f(t; params)`` with ``t`` the step (an integer >= 0) and LRBench's
parameter names: ``k0`` (start/floor), ``k1`` (peak), ``gamma`` (decay base), ``p``
(power), ``l`` (period, or the list of boundaries for NSTEP). The formulas are LRBench's
(git-disl/LRBench ``lr/LRfunctions.py``) with three fixes: NSTEP is a pure function of
the step instead of keeping a counter, POLY holds ``k0`` from ``t = l`` on instead of going
negative, and SIG cannot overflow. Quirks of the originals are kept and documented.

Notation: ``tri(x) = (2/pi)|asin(sin(pi x))|`` is a triangle wave (0 at even x, 1 at odd x);
``frac_down(x) = -x - floor(-x)`` is 0 at integers and ``1 - frac(x)`` otherwise.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class PolicyError(ValueError):
    """A policy name, parameter or step that is not allowed; the message says which and why."""


@dataclass(frozen=True)
class PolicySpec:
    """A zoo entry: its name, the parameters it takes, its formula and its function."""

    name: str
    params: tuple[str, ...]
    formula: str
    fn: Callable[..., float] = field(repr=False)


POLICIES: dict[str, PolicySpec] = {}


def _policy(name: str, *params: str) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Register ``fn`` under ``name``; the formula is the first line of its docstring."""

    def register(fn: Callable[..., float]) -> Callable[..., float]:
        formula = (fn.__doc__ or "").strip().splitlines()[0]
        POLICIES[name] = PolicySpec(name, params, formula, fn)
        return fn

    return register


# --- numerics shared by the formulas -------------------------------------------------


def _power(base: float, t: float) -> float:
    """``base**t`` for base > 0, +inf instead of OverflowError when base > 1 and t is huge."""
    try:
        return base**t
    except OverflowError:
        return math.inf


def _scale(x: float, factor: float) -> float:
    """``x * factor`` where a zero ``x`` stays zero even if the factor overflowed to inf."""
    return 0.0 if x == 0 else x * factor


def _halve(x: float, n: float) -> float:
    """``x / 2**n`` without building a huge integer (underflows to 0 instead of raising)."""
    return math.ldexp(x, -int(n))


def _tri(x: float) -> float:
    """Triangle wave ``(2/pi)|asin(sin(pi x))|``: 0 at even x, 1 at odd x, linear between."""
    return (2 / math.pi) * abs(math.asin(math.sin(math.pi * x)))


def _frac_down(x: float) -> float:
    """``-x - floor(-x)``: 0 at integers, ``1 - frac(x)`` otherwise (LRBench's restart ramp)."""
    return -x - math.floor(-x)


# --- fixed and decaying --------------------------------------------------------------


@_policy("FIX", "k0")
def fix(t: float, k0: float) -> float:
    """k0

    Constant learning rate.
    """
    return k0


@_policy("STEP", "k0", "gamma", "l")
def step(t: float, k0: float, gamma: float, l: float) -> float:
    """k0 * gamma**floor(t/l)

    Multiply by gamma every l steps.
    """
    return _scale(k0, _power(gamma, math.floor(t / l)))


@_policy("NSTEP", "k0", "gamma", "l")
def nstep(t: float, k0: float, gamma: float, l: tuple[int, ...]) -> float:
    """k0 * gamma**n(t), n(t) = number of boundaries in l that are <= t

    Multiply by gamma at each listed step. Pure, unlike LRBench's counter-based version.
    """
    return _scale(k0, _power(gamma, bisect.bisect_right(l, t)))


@_policy("EXP", "k0", "gamma")
def exp(t: float, k0: float, gamma: float) -> float:
    """k0 * gamma**t

    Exponential decay (growth if gamma > 1; saturates at +inf beyond float range).
    """
    return _scale(k0, _power(gamma, t))


@_policy("INV", "k0", "gamma", "p")
def inv(t: float, k0: float, gamma: float, p: float) -> float:
    """k0 * (1 + gamma*t)**(-p)

    Inverse-time decay (Caffe's ``inv``).
    """
    return k0 * (1 + gamma * t) ** (-p)


@_policy("POLY", "k0", "k1", "p", "l")
def poly(t: float, k0: float, k1: float, p: float, l: float) -> float:
    """(k1-k0)*(1 - t/l)**p + k0 for t < l; k0 for t >= l

    Polynomial decay from k1 to k0 over l steps, then held at k0 (LRBench's goes negative
    or complex past l).
    """
    if t >= l:
        return k0
    return (k1 - k0) * (1 - t / l) ** p + k0


@_policy("SIG", "k0", "gamma", "l")
def sig(t: float, k0: float, gamma: float, l: float) -> float:
    """k0 / (1 + exp(-gamma*(t - l)))

    Sigmoid centred at step l: rises to k0 for gamma > 0, falls from k0 for gamma < 0.
    """
    z = gamma * (t - l)
    if z >= 0:
        return k0 / (1 + math.exp(-z))
    e = math.exp(z)
    return k0 * e / (1 + e)


# --- triangular (cyclic) family ------------------------------------------------------


@_policy("TRI", "k0", "k1", "l")
def tri(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*(2/pi)*|asin(sin(pi*t/(2l)))| + k0

    Triangle wave: k0 at t = 0, 2l, 4l...; k1 at t = l, 3l... (half-period l).
    """
    return (k1 - k0) * _tri(t / (2 * l)) + k0


@_policy("TRI2", "k0", "k1", "l")
def tri2(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*(2/pi)*|asin(sin(pi*t/(2l)))| / 2**floor(t/(2l)) + k0

    TRI with the amplitude halved every full cycle (2l steps).
    """
    return _halve((k1 - k0) * _tri(t / (2 * l)), math.floor(t / (2 * l))) + k0


@_policy("TRIEXP", "k0", "k1", "gamma", "l")
def triexp(t: float, k0: float, k1: float, gamma: float, l: float) -> float:
    """(k1-k0)*(2/pi)*|asin(sin(pi*t/(2l)))| * gamma**t + k0

    TRI with the amplitude decaying exponentially.
    """
    return _scale((k1 - k0) * _tri(t / (2 * l)), _power(gamma, t)) + k0


@_policy("DTRI", "k0", "k1", "l")
def dtri(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*(2/pi)*|asin(sin(pi*(t+l)/(2l)))| + k0

    TRI shifted by l: starts at the peak k1.
    """
    return (k1 - k0) * _tri((t + l) / (2 * l)) + k0


@_policy("DTRI2", "k0", "k1", "l")
def dtri2(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*(2/pi)*|asin(sin(pi*(t+l)/(2l)))| / 2**floor((t+l)/(2l)) + k0

    DTRI with the amplitude halved every cycle; the halving happens at t = l, 3l... where
    the wave touches k0.
    """
    return _halve((k1 - k0) * _tri((t + l) / (2 * l)), math.floor((t + l) / (2 * l))) + k0


@_policy("DTRIEXP", "k0", "k1", "gamma", "l")
def dtriexp(t: float, k0: float, k1: float, gamma: float, l: float) -> float:
    """(k1-k0)*(2/pi)*|asin(sin(pi*(t+l)/(2l)))| * gamma**t + k0

    DTRI with the amplitude decaying exponentially.
    """
    return _scale((k1 - k0) * _tri((t + l) / (2 * l)), _power(gamma, t)) + k0


# --- sine family ---------------------------------------------------------------------


@_policy("SIN", "k0", "k1", "l")
def sin(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*|sin(pi*t/(2l))| + k0

    Rectified sine: k0 at t = 0, 2l...; k1 at t = l, 3l...
    """
    return (k1 - k0) * abs(math.sin(math.pi * t / (2 * l))) + k0


@_policy("SIN2", "k0", "k1", "l")
def sin2(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*|sin(pi*t/(2l))| / 2**floor(t/(2l)) + k0

    SIN with the amplitude halved every 2l steps.
    """
    return _halve((k1 - k0) * abs(math.sin(math.pi * t / (2 * l))), math.floor(t / (2 * l))) + k0


@_policy("SINEXP", "k0", "k1", "gamma", "l")
def sinexp(t: float, k0: float, k1: float, gamma: float, l: float) -> float:
    """(k1-k0)*|sin(pi*t/(2l))| * gamma**t + k0

    SIN with the amplitude decaying exponentially.
    """
    return _scale((k1 - k0) * abs(math.sin(math.pi * t / (2 * l))), _power(gamma, t)) + k0


@_policy("DSIN", "k0", "k1", "l")
def dsin(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*|sin(pi*(t+l)/(2l))| + k0

    SIN shifted by l: starts at the peak k1.
    """
    return (k1 - k0) * abs(math.sin(math.pi * (t + l) / (2 * l))) + k0


@_policy("DSIN2", "k0", "k1", "l")
def dsin2(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*|sin(pi*(t+l)/(2l))| / 2**floor((t+l)/(2l)) + k0

    DSIN with the amplitude halved every 2l steps, at t = l, 3l...
    """
    return _halve((k1 - k0) * abs(math.sin(math.pi * (t + l) / (2 * l))), math.floor((t + l) / (2 * l))) + k0


@_policy("DSINEXP", "k0", "k1", "gamma", "l")
def dsinexp(t: float, k0: float, k1: float, gamma: float, l: float) -> float:
    """(k1-k0)*|sin(pi*(t+l)/(2l))| * gamma**t + k0

    DSIN with the amplitude decaying exponentially.
    """
    return _scale((k1 - k0) * abs(math.sin(math.pi * (t + l) / (2 * l))), _power(gamma, t)) + k0


# --- cosine family -------------------------------------------------------------------


@_policy("COS", "k0", "k1", "l")
def cos(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*0.5*(1 + cos(pi*t/l)) + k0

    Cosine annealing from k1 (t = 0) to k0 (t = l), then back up to k1 at 2l (periodic,
    like torch's CosineAnnealingLR).
    """
    return (k1 - k0) * 0.5 * (1 + math.cos(math.pi * t / l)) + k0


@_policy("COS2", "k0", "k1", "l")
def cos2(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*0.5*(1 + cos(pi*t/l)) / 2**floor((t+l)/(2l)) + k0

    COS with the amplitude halved at t = l, 3l... (where the curve touches k0).
    """
    return _halve((k1 - k0) * 0.5 * (1 + math.cos(math.pi * t / l)), math.floor((t + l) / (2 * l))) + k0


@_policy("COSEXP", "k0", "k1", "gamma", "l")
def cosexp(t: float, k0: float, k1: float, gamma: float, l: float) -> float:
    """(k1-k0)*0.5*(1 + cos(pi*t/l)) * gamma**t + k0

    COS with the amplitude decaying exponentially.
    """
    return _scale((k1 - k0) * 0.5 * (1 + math.cos(math.pi * t / l)), _power(gamma, t)) + k0


@_policy("UPCOS", "k0", "k1", "l")
def upcos(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*0.5*(1 + cos(pi*(t/l + 1))) + k0

    Cosine rising from k0 (t = 0) to k1 (t = l), then back down to k0 at 2l.
    """
    return (k1 - k0) * 0.5 * (1 + math.cos(math.pi * (t / l + 1))) + k0


@_policy("UPCOS2", "k0", "k1", "l")
def upcos2(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*0.5*(1 + cos(pi*(t/l + 1))) / 2**floor(t/(2l)) + k0

    UPCOS with the amplitude halved at t = 2l, 4l... (where the curve touches k0).
    """
    return _halve((k1 - k0) * 0.5 * (1 + math.cos(math.pi * (t / l + 1))), math.floor(t / (2 * l))) + k0


@_policy("UPCOSEXP", "k0", "k1", "gamma", "l")
def upcosexp(t: float, k0: float, k1: float, gamma: float, l: float) -> float:
    """(k1-k0)*0.5*(1 + cos(pi*(t/l + 1))) * gamma**t + k0

    UPCOS with the amplitude decaying exponentially.
    """
    return _scale((k1 - k0) * 0.5 * (1 + math.cos(math.pi * (t / l + 1))), _power(gamma, t)) + k0


# --- restart (sawtooth) family -------------------------------------------------------


@_policy("RSW", "k0", "k1", "l")
def rsw(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*frac_down(t/l) + k0

    Sawtooth with warm restarts: jumps to just under k1 right after each multiple of l and
    falls linearly to k0. LRBench quirk, kept: exactly at t = 0, l, 2l... the value is k0,
    not k1 (the restart shows one step later).
    """
    return (k1 - k0) * _frac_down(t / l) + k0


@_policy("RSW2", "k0", "k1", "l")
def rsw2(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*frac_down(t/l) / 2**floor(t/l) + k0

    RSW with the amplitude halved every restart (same k0-at-multiples-of-l quirk).
    """
    return _halve((k1 - k0) * _frac_down(t / l), math.floor(t / l)) + k0


@_policy("RSWEXP", "k0", "k1", "gamma", "l")
def rswexp(t: float, k0: float, k1: float, gamma: float, l: float) -> float:
    """(k1-k0)*frac_down(t/l) * gamma**t + k0

    RSW with the amplitude decaying exponentially (same k0-at-multiples-of-l quirk).
    """
    return _scale((k1 - k0) * _frac_down(t / l), _power(gamma, t)) + k0


@_policy("SINRSW", "k0", "k1", "l")
def sinrsw(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*sin(pi/2*frac_down(t/l)) + k0

    Sine-shaped sawtooth with restarts every l steps; k0 exactly at multiples of l.
    """
    return (k1 - k0) * math.sin(math.pi / 2 * _frac_down(t / l)) + k0


@_policy("SINRSW2", "k0", "k1", "l")
def sinrsw2(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*sin(pi/2*frac_down(t/l)) / 2**floor(t/l) + k0

    SINRSW with the amplitude halved every restart.
    """
    return _halve((k1 - k0) * math.sin(math.pi / 2 * _frac_down(t / l)), math.floor(t / l)) + k0


@_policy("SINRSWEXP", "k0", "k1", "gamma", "l")
def sinrswexp(t: float, k0: float, k1: float, gamma: float, l: float) -> float:
    """(k1-k0)*sin(pi/2*frac_down(t/l)) * gamma**t + k0

    SINRSW with the amplitude decaying exponentially.
    """
    return _scale((k1 - k0) * math.sin(math.pi / 2 * _frac_down(t / l)), _power(gamma, t)) + k0


@_policy("COSRSW", "k0", "k1", "l")
def cosrsw(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*0.5*(1 - cos(pi*frac_down(t/l))) + k0

    Cosine-shaped sawtooth with restarts every l steps (SGDR-like); k0 exactly at
    multiples of l.
    """
    return (k1 - k0) * 0.5 * (1 - math.cos(math.pi * _frac_down(t / l))) + k0


@_policy("COSRSW2", "k0", "k1", "l")
def cosrsw2(t: float, k0: float, k1: float, l: float) -> float:
    """(k1-k0)*0.5*(1 - cos(pi*frac_down(t/l))) / 2**floor(t/l) + k0

    COSRSW with the amplitude halved every restart.
    """
    return _halve((k1 - k0) * 0.5 * (1 - math.cos(math.pi * _frac_down(t / l))), math.floor(t / l)) + k0


@_policy("COSRSWEXP", "k0", "k1", "gamma", "l")
def cosrswexp(t: float, k0: float, k1: float, gamma: float, l: float) -> float:
    """(k1-k0)*0.5*(1 - cos(pi*frac_down(t/l))) * gamma**t + k0

    COSRSW with the amplitude decaying exponentially.
    """
    return _scale((k1 - k0) * 0.5 * (1 - math.cos(math.pi * _frac_down(t / l))), _power(gamma, t)) + k0


POLICY_NAMES: tuple[str, ...] = tuple(POLICIES)

# Policies whose (k1-k0) term is multiplied by gamma**t: with k1 < k0 and gamma > 1 they
# would go negative, so that combination is refused.
_AMPLITUDE_DECAY = frozenset(name for name in POLICY_NAMES if name.endswith("EXP") and name != "EXP")


# --- validation ----------------------------------------------------------------------


def _real(name: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise PolicyError(f"{name}.{key}: {value!r} is not allowed; give a number")
    value = float(value)
    if not math.isfinite(value):
        raise PolicyError(f"{name}.{key}: {value!r} is not allowed; it must be finite")
    return value


def _check(name: str, key: str, value: float, ok: bool, allowed: str) -> float:
    if not ok:
        raise PolicyError(f"{name}.{key}: {value!r} is not allowed; it must be {allowed}")
    return value


def _boundaries(name: str, value: Any) -> tuple[int, ...]:
    """NSTEP's l: a non-empty, strictly increasing list of integer steps >= 0."""
    allowed = "a non-empty, strictly increasing list of integer steps >= 0, e.g. [100, 200]"
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise PolicyError(f"{name}.l: {value!r} is not allowed; it must be {allowed}")
    items = list(value)
    out = []
    for item in items:
        is_int = isinstance(item, (int, np.integer)) or (isinstance(item, float) and item.is_integer())
        if isinstance(item, bool) or not is_int or item < 0:
            raise PolicyError(f"{name}.l: {items!r} is not allowed; it must be {allowed}")
        out.append(int(item))
    if not out or any(a >= b for a, b in zip(out, out[1:])):
        raise PolicyError(f"{name}.l: {items!r} is not allowed; it must be {allowed}")
    return tuple(out)


def _period(name: str, value: Any) -> int | float:
    """A period l > 0; integral values are stored as int so dicts stay stable."""
    l = _real(name, "l", value)
    _check(name, "l", l, l > 0, "> 0 (a number of steps)")
    return int(l) if l.is_integer() else l


def _normalise(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check names and ranges of ``params`` for policy ``name``; return them normalised."""
    spec = POLICIES[name]
    takes = ", ".join(spec.params)
    missing = [key for key in spec.params if key not in params]
    if missing:
        raise PolicyError(f"{name}: missing parameter {', '.join(missing)}; {name} takes {takes}")
    for key in params:
        if key not in spec.params:
            raise PolicyError(f"{name}.{key}: unexpected parameter; {name} takes {takes}")
    out: dict[str, Any] = {}
    for key in spec.params:
        value = params[key]
        if key == "l":
            out[key] = _boundaries(name, value) if name == "NSTEP" else _period(name, value)
            continue
        x = _real(name, key, value)
        if key in ("k0", "k1", "p"):
            out[key] = _check(name, key, x, x >= 0, ">= 0")
        elif name == "SIG":
            out[key] = x
        elif name == "INV":
            out[key] = _check(name, key, x, x >= 0, ">= 0")
        else:
            out[key] = _check(name, key, x, x > 0, "> 0 (it is the base of a power)")
    if name in _AMPLITUDE_DECAY and out["k1"] < out["k0"] and out["gamma"] > 1:
        raise PolicyError(
            f"{name}.gamma: {out['gamma']!r} is not allowed with k1 < k0 "
            f"({out['k1']!r} < {out['k0']!r}); it must be <= 1, or k1 >= k0, so the LR stays >= 0"
        )
    return out


def _canonical_name(name: Any) -> str:
    key = name.upper() if isinstance(name, str) else name
    if key not in POLICIES:
        raise PolicyError(f"unknown policy {name!r}; allowed: {', '.join(POLICY_NAMES)}")
    return key


def check_step(step: Any) -> float:
    """A step must be a finite number >= 0 (an integer in practice)."""
    if isinstance(step, bool) or not isinstance(step, (int, float, np.integer, np.floating)):
        raise PolicyError(f"step: {step!r} is not allowed; give an integer >= 0")
    if not (math.isfinite(step) and step >= 0):
        raise PolicyError(f"step: {step!r} is not allowed; it must be an integer >= 0")
    return step


# --- the policy object ---------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A zoo policy with validated parameters: ``policy(step) -> lr``, pure and >= 0.

    ``name`` is one of :data:`POLICY_NAMES` (case-insensitive on input); ``params`` holds
    exactly the parameters that policy takes. Validation happens here, once.
    """

    name: str
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        name = _canonical_name(self.name)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "params", _normalise(name, self.params))

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.params.items())))

    def __call__(self, step: int) -> float:
        """The learning rate at ``step`` (>= 0)."""
        return float(POLICIES[self.name].fn(check_step(step), **self.params))

    def values(self, steps: Iterable[int]) -> np.ndarray:
        """The learning rates at each of ``steps``, as a float64 array."""
        return np.fromiter((self(s) for s in steps), dtype=np.float64)

    @property
    def formula(self) -> str:
        return POLICIES[self.name].formula

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., **params}``, JSON-ready; :func:`policy_from_dict` inverts it."""
        params = {key: list(v) if isinstance(v, tuple) else v for key, v in self.params.items()}
        return {"name": self.name, **params}


def make_policy(name: str, **params: Any) -> Policy:
    """Build and validate a zoo policy, e.g. ``make_policy("COS", k0=0.0, k1=0.1, l=100)``."""
    return Policy(name, params)
