"""The child network whose learning rate is controlled: data, models, training loop. No Ray.

The names below load on first use (PEP 562), so ``lrservice.child.names`` — what a config
may name — is importable without torch: a bad config is one line in well under a second.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "ChildData": "data", "DatasetUnavailable": "data", "load_dataset": "data",
    "FEATURE_NAMES": "features", "observation_features": "features",
    "build_model": "models",
    "ChildTrainer": "trainer", "Evaluation": "trainer", "TrainResult": "trainer", "cached_task_data": "trainer",
    "load_task_data": "trainer",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'lrservice.child' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lrservice.child.{_HOMES[name]}"), name)
