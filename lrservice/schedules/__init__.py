"""Learning-rate schedules as pure math: step -> lr. No Ray here.

- :mod:`.policies`: the 34 LRBench policies (:class:`Policy`, :func:`make_policy`).
- :mod:`.compose`: piecewise composition (:class:`Composite`) and :func:`policy_from_dict`.
- :mod:`.baselines`: constant / step / cosine / cyclic built with torch's schedulers.
- :mod:`.torch`: :class:`PolicyScheduler`, any policy as a torch ``LRScheduler``.

``PolicyScheduler`` is loaded on first use so that importing this package does not
import torch.
"""

from __future__ import annotations

from typing import Any

from lrservice.schedules.baselines import BASELINES, CYCLIC_MODES, Baseline, make_baseline
from lrservice.schedules.compose import Composite, policy_from_dict
from lrservice.schedules.policies import POLICIES, POLICY_NAMES, Policy, PolicyError, PolicySpec, make_policy

__all__ = [
    "BASELINES",
    "CYCLIC_MODES",
    "POLICIES",
    "POLICY_NAMES",
    "Baseline",
    "Composite",
    "Policy",
    "PolicyError",
    "PolicyScheduler",
    "PolicySpec",
    "make_baseline",
    "make_policy",
    "policy_from_dict",
]


def __getattr__(name: str) -> Any:
    if name == "PolicyScheduler":
        from lrservice.schedules.torch import PolicyScheduler

        return PolicyScheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
