"""Schedule kinds: the child trains with the task's optimizer under an LR schedule.

The four classic baselines build torch's own schedulers through
:class:`lrservice.schedules.Baseline` and run in batched pools through the equal zoo policy
(cross-checked step by step in tests/test_schedules_torch.py). The modern family —
``warmup_cosine``, ``wsd``, ``onecycle``, ``linear`` — is built on torch's schedulers where
torch has them (``LinearLR`` + ``CosineAnnealingLR`` in ``SequentialLR``, ``OneCycleLR``,
``LinearLR``); WSD, which torch lacks, is a formula run through ``LambdaLR``. Every ``lr`` is
the peak (the LR a constant phase holds), so one grid over ``lr`` tunes any of them.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from lrservice.errors import ConfigError
from lrservice.kinds.base import REQUIRED, TASK, ArmKind, Param, register, warmup_steps
from lrservice.schedules import CYCLIC_MODES, PolicyError, make_baseline, policy_from_dict


def _at_peak(optimizer, lr: float) -> None:
    """Every param group starts from ``lr`` (torch's schedulers read their base LR from the group)."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = float(lr)


class _Baseline(ArmKind):
    """constant / step / cosine / cyclic: :func:`make_baseline` builds the scheduler and the zoo twin."""

    baseline = True

    def check(self, params: Mapping[str, Any], path: str, config) -> None:
        try:
            make_baseline(self.name, **params)
        except PolicyError as exc:  # cross-parameter rules of Baseline (e.g. cyclic max_lr >= base_lr)
            key = str(exc).split(":", 1)[0].partition(".")[2] or "?"
            raise ConfigError(f"{path}.{key}: {str(exc).split(': ', 1)[-1]}") from None

    def initial_lr(self, params: Mapping[str, Any]) -> float:
        return float(make_baseline(self.name, **params).initial_lr)

    def scheduler(self, optimizer, params: Mapping[str, Any]):
        return make_baseline(self.name, **params).scheduler(optimizer)

    def lr_fn(self, params: Mapping[str, Any], steps: int):
        return make_baseline(self.name, **params).to_policy()


@register
class Constant(_Baseline):
    name = "constant"
    summary = "one LR throughout (torch ConstantLR, factor 1)"
    params = {"lr": Param(REQUIRED, "lr", "the LR")}


@register
class Step(_Baseline):
    name = "step"
    summary = "lr x gamma every step_size steps (torch StepLR)"
    params = {"lr": Param(REQUIRED, "lr", "the LR at step 0"),
              "step_size": Param(REQUIRED, "steps", "steps between decays"),
              "gamma": Param(REQUIRED, "lr", "decay factor")}


@register
class Cosine(_Baseline):
    name = "cosine"
    summary = "eta_min + (lr - eta_min)(1 + cos(pi t / total_steps)) / 2 (torch CosineAnnealingLR)"
    params = {"lr": Param(REQUIRED, "lr", "the LR at step 0"),
              "total_steps": Param(TASK, "steps", "the decay length (task.steps)"),
              "eta_min": Param(0.0, "nonneg", "the floor")}


@register
class Cyclic(_Baseline):
    name = "cyclic"
    summary = "triangles between base_lr and max_lr (torch CyclicLR, cycle_momentum off)"
    params = {"base_lr": Param(REQUIRED, "nonneg", "the low end (the LR at step 0)"),
              "max_lr": Param(REQUIRED, "lr", "the high end"),
              "step_size_up": Param(REQUIRED, "steps", "steps from low to high"),
              "mode": Param("triangular", CYCLIC_MODES, "cycle shape"),
              "gamma": Param(1.0, "lr", "exp_range decay per step")}


@register
class PolicyKind(ArmKind):
    """An LRBench zoo or composite policy given in ``params`` (``policy_from_dict``)."""

    name = "policy"
    summary = "an LRBench zoo or composite policy (params: name, k0, k1, ... or compose/boundaries)"

    def validate(self, params: Mapping[str, Any], path: str, config) -> None:
        try:
            policy_from_dict(params)
        except PolicyError as exc:
            raise ConfigError(f"{path}.params: {dict(params)!r} is not allowed for kind 'policy': {exc}") from None

    def full(self, params: Mapping[str, Any]) -> dict:
        return dict(params)

    def initial_lr(self, params: Mapping[str, Any]) -> float:
        return float(policy_from_dict(params)(0))

    def scheduler(self, optimizer, params: Mapping[str, Any]):
        from lrservice.schedules.torch import PolicyScheduler

        return PolicyScheduler(optimizer, policy_from_dict(params))

    def lr_fn(self, params: Mapping[str, Any], steps: int):
        return policy_from_dict(params)


_WARMUP = {"warmup": Param(0.05, "warmup", "linear warmup: a fraction of total_steps (< 1) or a step count"),
           "start_factor": Param(0.01, "unit", "the warmup's first LR as a fraction of lr")}


def _warmup(optimizer, p: Mapping[str, Any], after, w: int):
    """torch's ``LinearLR`` warmup over ``w`` steps, then ``after`` (a scheduler), in ``SequentialLR``."""
    from torch.optim import lr_scheduler

    if not w:
        return after
    warm = lr_scheduler.LinearLR(optimizer, start_factor=p["start_factor"], end_factor=1.0, total_iters=w)
    return lr_scheduler.SequentialLR(optimizer, [warm, after], milestones=[w])


@register
class WarmupCosine(ArmKind):
    name = "warmup_cosine"
    summary = ("linear warmup from start_factor x lr to lr over w steps, then cosine to eta_min at total_steps "
               "(torch LinearLR + CosineAnnealingLR in SequentialLR)")
    baseline = True
    params = {"lr": Param(REQUIRED, "lr", "the peak LR"), **_WARMUP,
              "total_steps": Param(TASK, "steps", "where the cosine ends (task.steps)"),
              "eta_min": Param(0.0, "nonneg", "the floor")}

    def initial_lr(self, params: Mapping[str, Any]) -> float:
        p = self.full(params)
        return float(p["lr"]) * (p["start_factor"] if warmup_steps(p["warmup"], p["total_steps"]) else 1.0)

    def scheduler(self, optimizer, params: Mapping[str, Any]):
        from torch.optim import lr_scheduler

        p = self.full(params)
        w = warmup_steps(p["warmup"], p["total_steps"])
        _at_peak(optimizer, p["lr"])
        cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=p["total_steps"] - w, eta_min=p["eta_min"])
        return _warmup(optimizer, p, cosine, w)


@register
class WarmupStableDecay(ArmKind):
    name = "wsd"
    summary = ("warmup-stable-decay: linear warmup, lr held, then the last decay x total_steps steps fall to "
               "eta_min, linearly or as 1 - sqrt (LambdaLR over the formula; torch has no WSD)")
    baseline = True
    params = {"lr": Param(REQUIRED, "lr", "the stable LR"), **_WARMUP,
              "decay": Param(0.2, "unit", "the decay phase, a fraction of total_steps"),
              "shape": Param("sqrt", ("linear", "sqrt"), "decay shape: linear, or 1 - sqrt(progress)"),
              "eta_min": Param(0.0, "nonneg", "the LR at total_steps"),
              "total_steps": Param(TASK, "steps", "the run's length (task.steps)")}

    def check(self, params: Mapping[str, Any], path: str, config) -> None:
        super().check(params, path, config)
        w, d = warmup_steps(params["warmup"], params["total_steps"]), round(params["decay"] * params["total_steps"])
        if w + d > params["total_steps"] or d < 1:
            raise ConfigError(f"{path}.decay: {params['decay']!r} is not allowed; the decay ({d} steps) must be >= 1 "
                              f"step and fit after the warmup ({w} steps) within total_steps ({params['total_steps']})")
        if params["eta_min"] > params["lr"]:
            raise ConfigError(f"{path}.eta_min: {params['eta_min']!r} is not allowed; it must be <= lr")

    def factor(self, p: Mapping[str, Any], step: int) -> float:
        """``start + (1 - start) t / w`` in the warmup, 1 while stable; in the decay, with
        ``q = (t - (T - d)) / d`` in [0, 1]: ``m + (1 - m)(1 - q)`` (linear) or ``m + (1 - m)(1 - sqrt q)``,
        ``m = eta_min / lr``; held at ``m`` past ``T``."""
        total = p["total_steps"]
        w, d = warmup_steps(p["warmup"], total), round(p["decay"] * total)
        if step < w:
            return p["start_factor"] + (1.0 - p["start_factor"]) * step / w
        q = min(max(step - (total - d), 0) / d, 1.0)
        floor = p["eta_min"] / p["lr"]
        drop = q if p["shape"] == "linear" else math.sqrt(q)
        return floor + (1.0 - floor) * (1.0 - drop)


@register
class OneCycle(ArmKind):
    name = "onecycle"
    summary = ("Smith's one-cycle: from lr / div_factor up to lr over pct_start of the run, then down to "
               "lr / (div_factor x final_div_factor) (torch OneCycleLR, cycle_momentum off)")
    baseline = True
    params = {"lr": Param(REQUIRED, "lr", "the peak (OneCycleLR max_lr)"),
              "pct_start": Param(0.3, "unit", "fraction of the run spent rising"),
              "div_factor": Param(25.0, "lr", "initial LR = lr / div_factor"),
              "final_div_factor": Param(1e4, "lr", "final LR = initial / final_div_factor"),
              "anneal": Param("cos", ("cos", "linear"), "the shape of both phases"),
              "total_steps": Param(TASK, "steps", "the run's length (task.steps)")}

    def initial_lr(self, params: Mapping[str, Any]) -> float:
        p = self.full(params)
        return float(p["lr"]) / p["div_factor"]

    def scheduler(self, optimizer, params: Mapping[str, Any]):
        from torch.optim import lr_scheduler

        p = self.full(params)
        return lr_scheduler.OneCycleLR(optimizer, max_lr=p["lr"], total_steps=p["total_steps"],
                                       pct_start=p["pct_start"], anneal_strategy=p["anneal"],
                                       div_factor=p["div_factor"], final_div_factor=p["final_div_factor"],
                                       cycle_momentum=False)


@register
class LinearDecay(ArmKind):
    name = "linear"
    summary = ("optional linear warmup, then a straight line from lr to 0 at total_steps "
               "(torch LinearLR, in SequentialLR after a LinearLR warmup)")
    baseline = True
    params = {"lr": Param(REQUIRED, "lr", "the peak LR"), **_WARMUP,
              "warmup": Param(0, "warmup", _WARMUP["warmup"].doc),
              "total_steps": Param(TASK, "steps", "where the LR reaches 0 (task.steps)")}

    initial_lr = WarmupCosine.initial_lr

    def scheduler(self, optimizer, params: Mapping[str, Any]):
        from torch.optim import lr_scheduler

        p = self.full(params)
        w = warmup_steps(p["warmup"], p["total_steps"])
        _at_peak(optimizer, p["lr"])
        decay = lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=p["total_steps"] - w)
        return _warmup(optimizer, p, decay, w)
