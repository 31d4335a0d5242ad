"""lrservice: learning-rate schedules on Ray — compare them, learn a controller, recommend one.

The Python API (:mod:`lrservice.api`; the CLI is a thin shell over it)::

    lrservice.compare(config, resume=False, overwrite=False)          -> CompareResult
    lrservice.train_controller(config, iterations=None, resume=False) -> TrainControllerResult
    lrservice.evaluate_controller(config, controllers, seeds=None)    -> EvaluateControllerResult
    lrservice.recommend(config, target_accuracy=None, budget=None)    -> RecommendResult
    lrservice.report(run_dir)                                         -> ReportResult

``config`` is a YAML/JSON path, a dict of sections or a :class:`RunConfig`. Names load on
first use (PEP 562), so ``import lrservice`` imports neither torch, Ray nor pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = ("train_controller", "evaluate_controller", "report", "run_config", "CompareResult", "TrainControllerResult",
        "EvaluateControllerResult", "RecommendResult", "ReportResult")
_CONFIG = ("RunConfig", "ConfigError", "load_config", "config_from_dict")
_COMMAND_PACKAGES = ("compare", "recommend")  # subpackages that are also their command (lrservice.api.CommandPackage)

__all__ = sorted(_API + _CONFIG + _COMMAND_PACKAGES)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("lrservice.api"), name)
    if name in _CONFIG:
        return getattr(importlib.import_module("lrservice.config"), name)
    if name in _COMMAND_PACKAGES:
        return importlib.import_module(f"lrservice.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
