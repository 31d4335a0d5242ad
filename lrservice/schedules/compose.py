"""Piecewise composition of policies over step ranges, and building policies from dicts.

A :class:`Composite` is itself a policy: segment ``i`` covers steps ``[b[i-1], b[i])`` and
sees its own clock, ``step - b[i-1]``, so every segment starts from its step 0. This is
optax's ``join_schedules`` and LRBench's piecewise policies, without LRBench's state.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from lrservice.schedules.policies import Policy, PolicyError, check_step


@dataclass(frozen=True)
class Composite:
    """Segments joined at step boundaries: ``lr(t) = segments[i](t - b[i-1])`` for ``b[i-1] <= t < b[i]``.

    ``boundaries`` must have one entry fewer than ``segments``, be strictly increasing and
    > 0 (``b[-1] = 0`` is implied). Segments may be policies or composites.
    """

    segments: tuple[Union[Policy, "Composite"], ...]
    boundaries: tuple[int, ...]

    def __post_init__(self) -> None:
        segments = tuple(self.segments)
        if not segments:
            raise PolicyError("compose: give at least one segment")
        for i, segment in enumerate(segments):
            if not isinstance(segment, (Policy, Composite)):
                raise PolicyError(f"compose[{i}]: {segment!r} is not allowed; give a Policy or Composite")
        boundaries = _boundaries(self.boundaries, len(segments))
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "boundaries", boundaries)

    def __call__(self, step: int) -> float:
        """The learning rate at ``step`` (>= 0), from the segment that covers it."""
        check_step(step)
        i = bisect.bisect_right(self.boundaries, step)
        start = self.boundaries[i - 1] if i else 0
        return self.segments[i](step - start)

    def values(self, steps) -> np.ndarray:
        """The learning rates at each of ``steps``, as a float64 array."""
        return np.fromiter((self(s) for s in steps), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """``{"compose": [segment dicts], "boundaries": [...]}``; :func:`policy_from_dict` inverts it."""
        return {"compose": [s.to_dict() for s in self.segments], "boundaries": list(self.boundaries)}


def _boundaries(value: Any, n_segments: int) -> tuple[int, ...]:
    allowed = f"{n_segments - 1} strictly increasing integer steps > 0 (one fewer than the {n_segments} segments)"
    try:
        items = list(value)
    except TypeError:
        raise PolicyError(f"compose.boundaries: {value!r} is not allowed; give {allowed}") from None
    out = []
    for b in items:
        is_int = isinstance(b, (int, np.integer)) or (isinstance(b, float) and b.is_integer())
        if isinstance(b, bool) or not is_int or b <= 0:
            raise PolicyError(f"compose.boundaries: {items!r} is not allowed; give {allowed}")
        out.append(int(b))
    if len(out) != n_segments - 1 or any(a >= b for a, b in zip(out, out[1:])):
        raise PolicyError(f"compose.boundaries: {items!r} is not allowed; give {allowed}")
    return tuple(out)


def policy_from_dict(d: Mapping[str, Any]) -> Policy | Composite:
    """Build a policy from ``{"name": "COS", "k0": ...}`` or ``{"compose": [...], "boundaries": [...]}``.

    This is the form configs use; ``policy_from_dict(p.to_dict()) == p`` for every policy.
    """
    if not isinstance(d, Mapping):
        raise PolicyError(f"policy: {d!r} is not allowed; give a mapping with 'name' or 'compose'")
    if "compose" in d:
        extra = sorted(set(d) - {"compose", "boundaries"})
        if extra:
            raise PolicyError(f"compose.{extra[0]}: unexpected key; a composite takes compose, boundaries")
        segments = d["compose"]
        if isinstance(segments, (str, bytes, Mapping)) or not hasattr(segments, "__iter__"):
            raise PolicyError(f"compose: {segments!r} is not allowed; give a list of policy dicts")
        return Composite(tuple(policy_from_dict(s) for s in segments), d.get("boundaries", ()))
    if "name" not in d:
        raise PolicyError(f"policy: {dict(d)!r} has no 'name' (a zoo policy) or 'compose' (a composite)")
    params = {key: value for key, value in d.items() if key != "name"}
    return Policy(d["name"], params)
