"""The four standard baselines, built with torch's own schedulers.

``constant`` (ConstantLR, factor 1), ``step`` (StepLR), ``cosine`` (CosineAnnealingLR) and
``cyclic`` (CyclicLR, ``cycle_momentum=False`` so it works with Adam). Each also maps to
the equivalent zoo policy (:meth:`Baseline.to_policy`) so the two paths can be
cross-checked step by step. torch is imported only when a scheduler is built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lrservice.schedules.policies import Policy, PolicyError, make_policy

BASELINES: tuple[str, ...] = ("constant", "step", "cosine", "cyclic")
CYCLIC_MODES: tuple[str, ...] = ("triangular", "triangular2", "exp_range")

# kind -> (required params, optional params with defaults)
_PARAMS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "constant": (("lr",), {}),
    "step": (("lr", "step_size", "gamma"), {}),
    "cosine": (("lr", "total_steps"), {"eta_min": 0.0}),
    "cyclic": (("base_lr", "max_lr", "step_size_up"), {"mode": "triangular", "gamma": 1.0}),
}
_INTS = ("step_size", "total_steps", "step_size_up")


@dataclass(frozen=True)
class Baseline:
    """A validated baseline: ``kind`` in :data:`BASELINES` and its ``params`` (defaults filled in).

    Parameters: constant: lr; step: lr, step_size, gamma; cosine: lr, total_steps,
    eta_min=0; cyclic: base_lr, max_lr, step_size_up, mode="triangular", gamma=1.0.
    """

    kind: str
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _normalise(self.kind, self.params))

    def __hash__(self) -> int:
        return hash((self.kind, tuple(self.params.items())))

    @property
    def initial_lr(self) -> float:
        """The lr at step 0 (``base_lr`` for cyclic, ``lr`` otherwise)."""
        return self.params["base_lr"] if self.kind == "cyclic" else self.params["lr"]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params}

    def scheduler(self, optimizer):
        """A torch scheduler for ``optimizer``; sets every param group's lr to :attr:`initial_lr`."""
        from torch.optim import lr_scheduler

        for group in optimizer.param_groups:
            group["lr"] = self.initial_lr
            group["initial_lr"] = self.initial_lr
        p = self.params
        if self.kind == "constant":
            return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        if self.kind == "step":
            return lr_scheduler.StepLR(optimizer, step_size=p["step_size"], gamma=p["gamma"])
        if self.kind == "cosine":
            return lr_scheduler.CosineAnnealingLR(optimizer, T_max=p["total_steps"], eta_min=p["eta_min"])
        return lr_scheduler.CyclicLR(
            optimizer,
            base_lr=p["base_lr"],
            max_lr=p["max_lr"],
            step_size_up=p["step_size_up"],
            mode=p["mode"],
            gamma=p["gamma"],
            cycle_momentum=False,
        )

    def to_policy(self) -> Policy:
        """The zoo policy with the same values.

        constant -> FIX; step -> STEP; cosine -> COS(k0=eta_min, k1=lr, l=total_steps), equal
        to torch for t <= total_steps; cyclic -> TRI / TRI2 / TRIEXP (triangular /
        triangular2 / exp_range) with k0=base_lr, k1=max_lr, l=step_size_up.
        """
        p = self.params
        if self.kind == "constant":
            return make_policy("FIX", k0=p["lr"])
        if self.kind == "step":
            return make_policy("STEP", k0=p["lr"], gamma=p["gamma"], l=p["step_size"])
        if self.kind == "cosine":
            return make_policy("COS", k0=p["eta_min"], k1=p["lr"], l=p["total_steps"])
        cyclic = dict(k0=p["base_lr"], k1=p["max_lr"], l=p["step_size_up"])
        if p["mode"] == "triangular":
            return make_policy("TRI", **cyclic)
        if p["mode"] == "triangular2":
            return make_policy("TRI2", **cyclic)
        return make_policy("TRIEXP", gamma=p["gamma"], **cyclic)


def make_baseline(kind: str, **params: Any) -> Baseline:
    """Build and validate a baseline, e.g. ``make_baseline("step", lr=0.01, step_size=250, gamma=0.5)``."""
    return Baseline(kind, params)


def _normalise(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    if kind not in _PARAMS:
        raise PolicyError(f"unknown baseline {kind!r}; allowed: {', '.join(BASELINES)}")
    required, optional = _PARAMS[kind]
    takes = ", ".join([*required, *(f"{k}={v!r}" for k, v in optional.items())])
    missing = [key for key in required if key not in params]
    if missing:
        raise PolicyError(f"{kind}: missing parameter {', '.join(missing)}; {kind} takes {takes}")
    for key in params:
        if key not in required and key not in optional:
            raise PolicyError(f"{kind}.{key}: unexpected parameter; {kind} takes {takes}")
    out = {key: params.get(key, optional.get(key)) for key in (*required, *optional)}
    for key, value in out.items():
        if key == "mode":
            if value not in CYCLIC_MODES:
                raise PolicyError(f"{kind}.mode: {value!r} is not allowed; allowed: {', '.join(CYCLIC_MODES)}")
        elif key in _INTS:
            is_int = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
            if isinstance(value, bool) or not is_int or value <= 0:
                raise PolicyError(f"{kind}.{key}: {value!r} is not allowed; it must be an integer > 0")
            out[key] = int(value)
        else:
            out[key] = _number(kind, key, value)
    floor = "eta_min" if kind == "cosine" else "base_lr"
    for key in ("lr", "max_lr", "gamma"):
        if key in out and out[key] <= 0:
            raise PolicyError(f"{kind}.{key}: {out[key]!r} is not allowed; it must be > 0")
    if floor in out and out[floor] < 0:
        raise PolicyError(f"{kind}.{floor}: {out[floor]!r} is not allowed; it must be >= 0")
    if kind == "cyclic" and out["max_lr"] < out["base_lr"]:
        raise PolicyError(f"cyclic.max_lr: {out['max_lr']!r} is not allowed; "
                          f"it must be >= base_lr ({out['base_lr']!r})")
    return out


def _number(kind: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PolicyError(f"{kind}.{key}: {value!r} is not allowed; give a finite number")
    return float(value)
