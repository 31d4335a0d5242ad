"""The arm-kind registry: each kind of comparison arm is one :class:`ArmKind` subclass.

A kind declares its parameters (:class:`Param`, with defaults) and fills in one or two
methods — a torch LR scheduler on the child's optimizer (:meth:`ArmKind.scheduler`), or a
multiplier of the peak LR (:meth:`ArmKind.factor`), or the optimizer itself
(:meth:`ArmKind.optimizer`) — and inherits validation, task-dependent defaults, the
initial LR, the step -> LR function for batched pools and the LR it reports. Modelled on
torch's ``LRScheduler`` subclasses (implement ``get_lr``, inherit the rest) and
gymnasium's ``register``/``make``: built-ins register by name, a user's kind is
``"package.module:Class"`` and goes through the same door (:func:`get_kind`).

This module imports without torch: ``config`` checks kind names at load, and a bad config
is refused before torch loads. Methods that need torch import it.
"""

from __future__ import annotations

import importlib
import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

from lrservice.errors import ConfigError

REQUIRED = object()
"""The default of a parameter the arm must give (in ``params`` or ``grid``)."""
TASK = object()
"""The default of a parameter filled from the run config (:meth:`ArmKind.task_defaults`)."""


@dataclass(frozen=True)
class Param:
    """One parameter of a kind: its default and what values are allowed.

    ``check``: ``"lr"`` (finite > 0), ``"nonneg"`` (finite >= 0), ``"steps"`` (integer > 0),
    ``"fraction"`` (in [0, 1)), ``"unit"`` (in (0, 1]), ``"warmup"`` (a fraction of
    ``total_steps`` in [0, 1), or a whole number of steps >= 1), ``"str"``, ``"int4"`` (an
    integer >= 4), or a tuple of allowed values.
    """

    default: Any = REQUIRED
    check: Any = "lr"
    doc: str = ""


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _is_whole(value: Any) -> bool:
    return _is_number(value) and float(value).is_integer()


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lr": (lambda v: _is_number(v) and v > 0, "it must be a finite number > 0"),
    "nonneg": (lambda v: _is_number(v) and v >= 0, "it must be a finite number >= 0"),
    "steps": (lambda v: _is_whole(v) and v > 0, "it must be an integer > 0"),
    "fraction": (lambda v: _is_number(v) and 0 <= v < 1, "it must lie in [0, 1)"),
    "unit": (lambda v: _is_number(v) and 0 < v <= 1, "it must lie in (0, 1]"),
    "warmup": (lambda v: _is_number(v) and (0 <= v < 1 or (_is_whole(v) and v >= 1)),
               "give a fraction of total_steps in [0, 1) or a whole number of steps >= 1"),
    "str": (lambda v: isinstance(v, str) and bool(v), "give a non-empty string"),
    "int4": (lambda v: _is_whole(v) and v >= 4, "it must be an integer >= 4 (PBT with fewer exploits nobody)"),
}


def grid_points(params: Mapping[str, Any], grid: Mapping[str, list]) -> list[dict]:
    """Every combination of ``grid`` merged over the fixed ``params``, in grid order (no grid: ``params``)."""
    if not grid:
        return [dict(params)]
    keys = list(grid)
    return [{**params, **dict(zip(keys, combo))} for combo in itertools.product(*(grid[k] for k in keys))]


def warmup_steps(warmup: float, total_steps: int) -> int:
    """A ``warmup`` parameter as steps: a fraction (< 1) of ``total_steps`` rounded down, else itself."""
    return int(warmup * total_steps) if warmup < 1 else int(warmup)


class ArmKind:
    """One kind of arm. Subclasses set :attr:`name`, :attr:`params` and fill in what differs.

    Class flags say how the rest of lrservice treats the kind: ``baseline`` (a tuned
    baseline: a candidate reference for paired statistics and a rival in
    ``evaluate-controller``), ``tunable`` (may have a grid), ``population`` (runs as PBT
    populations, not eval trials), ``batchable`` (runs in a batched pool through
    :meth:`lr_fn`; optimizer-level kinds run as separate children), ``learned`` (a learned
    controller sets the LR; ``checkpoint: auto`` trains one in the run).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params: ClassVar[Mapping[str, Param]] = {}
    baseline: ClassVar[bool] = False
    tunable: ClassVar[bool] = True
    population: ClassVar[bool] = False
    batchable: ClassVar[bool] = True
    learned: ClassVar[bool] = False

    # -- parameters ------------------------------------------------------------------------
    def task_defaults(self, config) -> dict:
        """Defaults that depend on the run config (``config``: a ``RunConfig``); e.g. ``total_steps``."""
        return {"total_steps": config.task.steps} if "total_steps" in self.params else {}

    def resolve(self, params: Mapping[str, Any], config) -> dict:
        """``params`` with the task-dependent defaults filled in (fixed defaults stay implicit)."""
        out = dict(params)
        for key, value in self.task_defaults(config).items():
            out.setdefault(key, value)
        return out

    def full(self, params: Mapping[str, Any]) -> dict:
        """Resolved ``params`` with every fixed default filled in (what the methods below read)."""
        out = {**{k: p.default for k, p in self.params.items() if p.default not in (REQUIRED, TASK)}, **params}
        for key, spec in self.params.items():  # a step count given as 200.0 in YAML is still 200 steps
            if key in out and (spec.check == "steps" or (spec.check == "warmup" and out[key] >= 1)):
                out[key] = int(out[key])
        return out

    def validate(self, params: Mapping[str, Any], path: str, config) -> None:
        """Raise a one-line :class:`ConfigError` naming ``<path>.params.<key>`` for the first bad value."""
        allowed = ", ".join(self.params) or "none"
        for key in params:
            if key not in self.params:
                raise ConfigError(f"{path}.params.{key}: unknown key; a {self.name} arm takes: {allowed}")
        for key, spec in self.params.items():
            if key not in params:
                if spec.default is REQUIRED:
                    raise ConfigError(f"{path}.params.{key}: required; a {self.name} arm takes: {allowed}")
                continue
            value = params[key]
            if isinstance(spec.check, tuple):
                ok, why = value in spec.check, f"choose one of: {', '.join(map(str, spec.check))}"
            else:
                test, why = _CHECKS[spec.check]
                ok = test(value)
            if not ok:
                raise ConfigError(f"{path}.params.{key}: {value!r} is not allowed; {why}")
        self.check(self.full(params), f"{path}.params", config)

    def check(self, params: Mapping[str, Any], path: str, config) -> None:
        """Rules across parameters (every value is already well formed); ``path`` ends in ``.params``."""
        if "warmup" in params and "total_steps" in params:
            w = warmup_steps(params["warmup"], params["total_steps"])
            if w >= params["total_steps"]:
                raise ConfigError(f"{path}.warmup: {params['warmup']!r} is not allowed; the warmup ({w} steps) must "
                                  f"end before total_steps ({params['total_steps']})")

    # -- running a child -------------------------------------------------------------------
    def initial_lr(self, params: Mapping[str, Any]) -> float:
        """The LR the child's optimizer is built with (its value at step 0 for schedules)."""
        p = self.full(params)
        return float(p["lr"]) * (self.factor(p, 0) if type(self).factor is not ArmKind.factor else 1.0)

    def factor(self, params: Mapping[str, Any], step: int) -> float:
        """The LR at ``step`` as a multiple of ``params["lr"]`` (kinds defined by a formula fill this in)."""
        raise NotImplementedError

    def scheduler(self, optimizer, params: Mapping[str, Any]):
        """A torch LR scheduler stepped once after every optimizer step; None: the LR stays.

        The default runs :meth:`factor` through torch's ``LambdaLR`` when the kind has one.
        """
        if type(self).factor is ArmKind.factor:
            return None
        from torch.optim.lr_scheduler import LambdaLR

        p = self.full(params)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = float(p["lr"])
        return LambdaLR(optimizer, lambda step: self.factor(p, step))

    def optimizer(self, task, model_params, params: Mapping[str, Any]):
        """The child's optimizer; None: the task's own (Adam or SGD). Optimizer-level kinds fill this in."""
        return None

    def optimizer_factory(self, task, params: Mapping[str, Any]) -> Callable | None:
        """``factory(model_params, lr) -> optimizer`` for ``ChildTrainer.reset``; None for the task's own."""
        if type(self).optimizer is ArmKind.optimizer:
            return None
        return lambda model_params, lr: self.optimizer(task, model_params, params)

    def lr_fn(self, params: Mapping[str, Any], steps: int) -> Callable[[int], float]:
        """Step -> LR for a batched pool: :meth:`factor` when defined, else the kind's torch scheduler's
        own values, recorded on a one-parameter optimizer for ``steps`` steps."""
        p = self.full(params)
        if type(self).factor is not ArmKind.factor:
            return lambda step: float(p["lr"]) * self.factor(p, step)
        import torch

        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=self.initial_lr(p))
        sched = self.scheduler(opt, p)
        values = []
        for _ in range(steps):
            values.append(float(opt.param_groups[0]["lr"]))
            opt.step()
            if sched is not None:
                sched.step()
        return lambda step: values[min(int(step), steps - 1)]

    def reported_lr(self, optimizer) -> float:
        """The LR a step used, as the ``lr`` column reports it (call right after the step)."""
        return float(optimizer.param_groups[0]["lr"])

    def controller(self, params: Mapping[str, Any]):
        """A learned controller that sets the LR as the child trains (a
        :class:`~lrservice.control.controller.LearnedController`, or anything with its ``action_every``,
        ``next_lr``, ``reset``, ``run_state`` and ``load_run_state``); None for every other kind."""
        return None

    def controller_checkpoint(self, params: Mapping[str, Any]) -> str | None:
        """The controller file or directory the arm names, to be checked before work starts (None: none)."""
        return None

    def describe(self) -> str:
        """``name(param=default, ...)`` for docs and errors."""
        def show(p: Param) -> str:
            return "required" if p.default is REQUIRED else "from the task" if p.default is TASK else repr(p.default)
        return f"{self.name}(" + ", ".join(f"{k}={show(p)}" for k, p in self.params.items()) + ")"


_REGISTRY: dict[str, ArmKind] = {}


def register(cls: type[ArmKind]) -> type[ArmKind]:
    """Class decorator: make ``cls`` the kind named ``cls.name`` (a name is registered once)."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"arm kind {cls.name!r}: give each kind a new, non-empty name")
    _REGISTRY[cls.name] = cls()
    return cls


def get_kind(name: str, path: str = "kind") -> ArmKind:
    """The kind registered as ``name``, or a user's ``"package.module:Class"`` (an :class:`ArmKind` subclass)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if isinstance(name, str) and ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"{path}: {name!r} cannot be loaded ({exc}); give 'package.module:Class'") from None
        if not (isinstance(cls, type) and issubclass(cls, ArmKind)):
            raise ConfigError(f"{path}: {name!r} is not an lrservice.kinds.ArmKind subclass")
        kind = cls()
        _REGISTRY[name] = kind
        return kind
    raise ConfigError(f"{path}: {name!r} is not allowed; choose one of: {', '.join(kinds())} "
                      "(or a 'package.module:Class' ArmKind)")


def kinds() -> tuple[str, ...]:
    """Names of the registered built-in kinds, in registration order."""
    return tuple(k for k in _REGISTRY if ":" not in k)


def baselines() -> tuple[str, ...]:
    """Kinds that are tuned baselines: candidate references for paired statistics and rivals of a controller."""
    return tuple(k for k, kind in _REGISTRY.items() if kind.baseline and ":" not in k)
