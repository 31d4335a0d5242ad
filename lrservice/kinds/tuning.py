"""The tuning rule every tuned arm and rival follows (compare's tune phase, evaluate-controller's
rivals, the selection's tuned cosine): a grid point's score is its mean final validation loss over
the tune seeds, a diverged or missing loss counting +inf so a stable point always beats an unstable
one; the winner is the lowest score, ties going to the first point seen. Pure Python."""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def grid_scores(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[dict, float]]]:
    """Per arm, every grid point's params and score, in the order the points were first seen.

    ``rows`` carry ``arm``, ``params`` (dict), ``final_val_loss`` and optionally ``diverged``: one per
    (grid point, tune seed)."""
    groups: dict[str, dict[str, tuple[dict, list[float]]]] = {}
    for row in rows:
        loss = row.get("final_val_loss")
        finite = loss is not None and math.isfinite(float(loss)) and not row.get("diverged")
        groups.setdefault(row["arm"], {}).setdefault(_key(row["params"]), (dict(row["params"]), []))[1].append(
            float(loss) if finite else math.inf)
    return {arm: [(params, sum(losses) / len(losses)) for params, losses in points.values()]
            for arm, points in groups.items()}


def tuned_winners(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[dict, float]]:
    """Per arm, the grid point with the lowest score and that score (:func:`grid_scores`)."""
    return {arm: min(points, key=lambda point: point[1]) for arm, points in grid_scores(rows).items()}
