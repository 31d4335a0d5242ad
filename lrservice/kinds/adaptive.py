"""Kinds that set the LR while the child trains: the learned controller and PBT."""

from __future__ import annotations

from typing import Any, Mapping

from lrservice.errors import ConfigError
from lrservice.kinds.base import ArmKind, Param, register

AUTO = "auto"
DEFAULT_CHECKPOINT = "pretrained:general"
"""A controller arm that names no checkpoint runs the shipped general controller (trained across a suite of
tasks, evaluated zero-shot on task families it never saw: docs/controller.md); ``auto`` trains one in the run."""
PBT_DEFAULTS = {"lr_min": 1e-4, "lr_max": 1e-1, "population": 4}


@register
class Controller(ArmKind):
    """A learned controller (``params.checkpoint``: ``pretrained:NAME`` (default :data:`DEFAULT_CHECKPOINT`), an
    export, a checkpoint dir, or ``auto``: train one for this run)."""

    name = "controller"
    summary = "a learned controller acting every action_every steps from lr"
    learned = True
    batchable = False
    params = {"checkpoint": Param(DEFAULT_CHECKPOINT, "str",
                                  "pretrained:NAME, a controller.pt, a checkpoint dir, or auto (train one in the run)"),
              "lr": Param(None, "lr", "the initial LR (default: the middle of controller.initial_lrs)")}

    def task_defaults(self, config) -> dict:
        ctrl = config.controller
        lr = ctrl.initial_lr if ctrl.initial_lr is not None else sorted(ctrl.initial_lrs)[len(ctrl.initial_lrs) // 2]
        return {"checkpoint": DEFAULT_CHECKPOINT, "lr": lr}

    def validate(self, params: Mapping[str, Any], path: str, config) -> None:
        if not isinstance(params.get("checkpoint"), str):
            raise ConfigError(f"{path}.params.checkpoint: {params.get('checkpoint')!r} is not allowed; "
                              "give pretrained:NAME, a checkpoint directory or 'auto'")
        super().validate(params, path, config)

    def controller_checkpoint(self, params: Mapping[str, Any]) -> str | None:
        return None if params["checkpoint"] == AUTO else params["checkpoint"]

    def controller(self, params: Mapping[str, Any]):
        from lrservice.control.controller import LearnedController  # torch: only when a trial runs one

        return LearnedController.from_checkpoint(params["checkpoint"])


@register
class PopulationBasedTraining(ArmKind):
    """PBT on the LR: one population whose members each train one child per held-out seed; Tune perturbs
    ``lr`` between checkpoints."""

    name = "pbt"
    summary = "Population Based Training on the LR (log-uniform in [lr_min, lr_max])"
    tunable = False
    population = True
    batchable = False
    params = {"lr_min": Param(PBT_DEFAULTS["lr_min"], "lr", "low end of the LR range"),
              "lr_max": Param(PBT_DEFAULTS["lr_max"], "lr", "high end"),
              "population": Param(PBT_DEFAULTS["population"], "int4", "members per population"),
              "interval": Param(None, "steps", "steps between perturbations (a multiple of task.eval_every)")}

    def task_defaults(self, config) -> dict:
        return {**PBT_DEFAULTS, "interval": max(config.task.eval_every, config.task.steps // 10)}

    def check(self, params: Mapping[str, Any], path: str, config) -> None:
        if params["lr_min"] >= params["lr_max"]:
            raise ConfigError(f"{path}.lr_min: {params['lr_min']!r} must be below lr_max ({params['lr_max']!r})")
        every = config.task.eval_every
        if params["interval"] % every:
            raise ConfigError(f"{path}.interval: {params['interval']!r} is not allowed; it must be a positive "
                              f"multiple of task.eval_every ({every})")
        if params["interval"] >= config.task.steps:
            raise ConfigError(f"{path}.interval: {params['interval']!r} is not allowed; it must be below task.steps "
                              f"({config.task.steps}) or PBT never perturbs")

    def initial_lr(self, params: Mapping[str, Any]) -> float:
        """The member's ``lr`` (Tune's sample, merged into params by the trial)."""
        return float(params["lr"])
