"""Optimizer-level kinds: the rival is an optimizer, not a schedule on the task's optimizer.

``schedule_free`` is Schedule-Free AdamW (Defazio et al. 2024, the ``schedulefree`` package;
first in AlgoPerf's self-tuning track): no decay schedule, a linear warmup inside the
optimizer, and evaluation at the averaged weights — the child's trainer calls
``optimizer.eval()`` before every evaluation or observation and ``optimizer.train()`` before
training again. ``prodigy`` (Mishchenko & Defazio 2024, ``prodigyopt``) estimates the step
size itself; ``lr`` is a multiplier of its estimate d (1 by default), optionally under a
cosine. Their children run one by one (batched pools implement Adam and SGD only), and
the ``lr`` they report is the step size a step used (schedule-free: lr x warmup; prodigy:
d x lr).
"""

from __future__ import annotations

from typing import Any, Mapping

from lrservice.kinds.base import REQUIRED, TASK, ArmKind, Param, register, warmup_steps


class _OptimizerKind(ArmKind):
    baseline = True
    batchable = False

    def task_defaults(self, config) -> dict:
        return {**super().task_defaults(config), "weight_decay": config.task.weight_decay}


@register
class ScheduleFree(_OptimizerKind):
    name = "schedule_free"
    summary = "Schedule-Free AdamW (schedulefree.AdamWScheduleFree): warmup inside, no decay, eval at averaged weights"
    params = {"lr": Param(REQUIRED, "lr", "the LR after warmup"),
              "warmup": Param(0.05, "warmup", "the optimizer's warmup_steps: a fraction of total_steps or steps"),
              "beta1": Param(0.9, "fraction", "interpolation / averaging momentum"),
              "weight_decay": Param(TASK, "nonneg", "decoupled weight decay (task.weight_decay)"),
              "total_steps": Param(TASK, "steps", "the run's length, for a fractional warmup (task.steps)")}

    def optimizer(self, task, model_params, params: Mapping[str, Any]):
        from schedulefree import AdamWScheduleFree

        p = self.full(params)
        return AdamWScheduleFree(model_params, lr=p["lr"], betas=(p["beta1"], 0.999), weight_decay=p["weight_decay"],
                                 warmup_steps=warmup_steps(p["warmup"], p["total_steps"]))

    def lr_fn(self, params: Mapping[str, Any], steps: int):
        """The step size of step t: ``lr (t + 1) / w`` during the warmup of w steps, then ``lr``."""
        p = self.full(params)
        w = warmup_steps(p["warmup"], p["total_steps"])
        return lambda step: float(p["lr"]) * (min(1.0, (step + 1) / w) if w else 1.0)

    def reported_lr(self, optimizer) -> float:
        group = optimizer.param_groups[0]
        return float(group["scheduled_lr"]) if group["k"] else float(group["lr"])


@register
class Prodigy(_OptimizerKind):
    name = "prodigy"
    summary = "Prodigy (prodigyopt.Prodigy): Adam with a learned step size d; lr multiplies it"
    params = {"lr": Param(1.0, "lr", "multiplier of Prodigy's estimate d (1: LR-free)"),
              "d_coef": Param(1.0, "lr", "scales the estimate d"),
              "schedule": Param("cosine", ("constant", "cosine"), "the lr multiplier over the run (cosine to 0)"),
              "weight_decay": Param(TASK, "nonneg", "decoupled weight decay (task.weight_decay)"),
              "total_steps": Param(TASK, "steps", "the cosine's length (task.steps)")}

    def optimizer(self, task, model_params, params: Mapping[str, Any]):
        from prodigyopt import Prodigy as ProdigyOptimizer

        p = self.full(params)
        return ProdigyOptimizer(model_params, lr=p["lr"], d_coef=p["d_coef"], weight_decay=p["weight_decay"])

    def scheduler(self, optimizer, params: Mapping[str, Any]):
        from torch.optim import lr_scheduler

        p = self.full(params)
        if p["schedule"] == "constant":
            return None
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=p["total_steps"])

    def reported_lr(self, optimizer) -> float:
        group = optimizer.param_groups[0]
        return float(group["d"] * group["lr"])
