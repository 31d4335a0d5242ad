"""Arm kinds: one class per kind, one registry (see :mod:`lrservice.kinds.base`). Imports without torch.

Built-ins, in this order: constant, step, cosine, cyclic, policy, warmup_cosine, wsd,
onecycle, linear (:mod:`.schedules`), schedule_free, prodigy (:mod:`.optimizers`),
controller, pbt (:mod:`.adaptive`). docs/compare.md lists their params and formulas.
"""

import importlib

from lrservice.kinds.base import (
    REQUIRED,
    TASK,
    ArmKind,
    Param,
    baselines,
    get_kind,
    grid_points,
    kinds,
    register,
    warmup_steps,
)
from lrservice.kinds.tuning import grid_scores, tuned_winners

for _module in ("schedules", "optimizers", "adaptive"):  # importing a module registers its kinds, in this order
    importlib.import_module(f"lrservice.kinds.{_module}")

__all__ = ["REQUIRED", "TASK", "ArmKind", "Param", "baselines", "get_kind", "grid_points", "grid_scores", "kinds",
           "register", "tuned_winners", "warmup_steps"]
