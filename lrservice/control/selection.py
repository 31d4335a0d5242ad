"""Checkpoint selection: which kept checkpoint of a training run to deploy. Pure logic, numpy only.

``train-controller`` scores every checkpoint it keeps on the selection seeds
(``controller.selection_seeds``) from every initial LR against tuned cosine on the same seeds
(:mod:`lrservice.control.evaluate` runs both), on every task the controller trains on (the run's
``task``, or each of ``controller.tasks``, with cosine tuned per task); each (checkpoint, task,
initial LR) is one row of the selection table (:data:`SELECTION_COLUMNS`). A checkpoint's
**score** is its mean paired difference of final validation loss to tuned cosine
(``dval_vs_cosine``) *relative* to tuned cosine's mean loss on that task (``cosine_val_loss``),
averaged over the rows with equal weight; lower is better. Relative, so that a task whose losses
are ten times larger does not outvote the others (on one task it orders checkpoints exactly as the
plain Δ does). A checkpoint with a diverged child or a non-finite loss scores +inf. The **pick**
has the lowest score; equal scores go to the earlier iteration (as good, for less training). Test
metrics ride along in the table, never in the score. With several runs of one recipe
(``controller.train_seeds``) each run picks its own checkpoint and :func:`best_run` picks among
the runs' picks by the same score.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

SELECTION_FILE = "selection.parquet"
SELECTION_RECORD = "selection.json"  # the tuned cosine (cached), the pick and its cost
REUSED_FROM = "reused_from"  # in a cached cosine: the training seed whose run tuned it (this run paid nothing)
SCORE_KEY = "dval_vs_cosine"
SELECTION_COLUMNS = {  # name -> Arrow type name; one row per (checkpoint, task, initial LR)
    "iteration": "int64", "checkpoint": "string", "episodes": "float64", "training_child_steps": "float64",
    "task": "string", "cosine_val_loss": "float64", "initial_lr": "float64", "seeds": "int64",
    "val_loss_mean": "float64", "val_loss_std": "float64",
    "dval_vs_cosine": "float64", "dval_vs_cosine_low": "float64", "dval_vs_cosine_high": "float64",
    "test_loss_mean": "float64", "test_accuracy_mean": "float64", "dacc_vs_cosine": "float64",
    "dacc_vs_cosine_low": "float64", "dacc_vs_cosine_high": "float64", "diverged": "int64",
    "score": "float64", "picked": "bool_", "selection_child_steps": "float64", "wall_s": "float64",
    "train_seed": "int64",
}


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def relative_delta(row: Mapping[str, Any]) -> float:
    """A row's Δ vs tuned cosine as a fraction of tuned cosine's mean loss on that task (NaN if undefined)."""
    reference = row.get("cosine_val_loss")
    if not _finite(row.get(SCORE_KEY)) or not _finite(reference) or float(reference) <= 0:
        return math.nan
    return float(row[SCORE_KEY]) / float(reference)


def checkpoint_score(rows: Sequence[Mapping[str, Any]]) -> float:
    """One checkpoint's score from its rows (one per task and initial LR): the mean of their
    :func:`relative_delta`, every task and start weighing the same.

    +inf when there are no rows, or any row had a diverged child or a non-finite loss: the
    paired difference skips non-finite pairs, so without this a diverging policy could look good.
    """
    if not rows:
        return math.inf
    deltas = [relative_delta(r) for r in rows]
    for r, d in zip(rows, deltas):
        if int(r.get("diverged") or 0) > 0 or not _finite(r.get("val_loss_mean")) or not _finite(d):
            return math.inf
    return float(sum(deltas) / len(deltas))


def scores(rows: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Every scored checkpoint's score, by iteration (ascending)."""
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(int(r["iteration"]), []).append(r)
    return {iteration: checkpoint_score(groups[iteration]) for iteration in sorted(groups)}


def pick(rows: Sequence[Mapping[str, Any]]) -> int:
    """The iteration with the lowest score; ties (and an all-+inf table) go to the earliest."""
    by_iteration = scores(rows)
    if not by_iteration:
        raise ValueError("pick: no scored checkpoints")
    return min(by_iteration, key=lambda iteration: (by_iteration[iteration], iteration))


def best_run(picks: Mapping[int, float]) -> int:
    """Among several runs of one recipe (``{train seed: its pick's score}``, in the order they were
    asked for), the one whose pick scores lowest; ties (and all +inf) go to the first. The scores
    are comparable: every run is scored on the same selection seeds against the same tuned cosine."""
    if not picks:
        raise ValueError("best_run: no runs")
    order = {seed: i for i, seed in enumerate(picks)}
    return min(picks, key=lambda seed: (picks[seed], order[seed]))


def marked(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The rows ordered by (iteration, task, initial LR descending) with ``score`` and ``picked`` filled in."""
    by_iteration = scores(rows)
    chosen = pick(rows) if rows else None
    out = [{**r, "score": by_iteration[int(r["iteration"])], "picked": int(r["iteration"]) == chosen} for r in rows]
    return sorted(out, key=lambda r: (int(r["iteration"]), str(r.get("task") or ""), -float(r["initial_lr"])))


def checkpoint_line(rows: Sequence[Mapping[str, Any]], best: int) -> str:
    """``[lrservice] selection iter 16 (512 episodes): score -1.52%  digits/mlp/adam/600: from 1e-02 0.0771
    (Δ -0.0020 [..]) ...``: the score as a percentage of tuned cosine's loss, then every task's starts."""
    first = rows[0]
    tasks: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        tasks.setdefault(str(r.get("task") or ""), []).append(r)
    starts = "  ".join(
        (f"{task}: " if task else "") + "  ".join(
            f"from {r['initial_lr']:.0e} {r['val_loss_mean']:.4f} (Δ {r[SCORE_KEY]:+.4f} "
            f"[{r['dval_vs_cosine_low']:+.4f}, {r['dval_vs_cosine_high']:+.4f}], "
            f"test acc {r['test_accuracy_mean']:.4f})"
            for r in sorted(group, key=lambda r: -float(r["initial_lr"])))
        for task, group in tasks.items())
    diverged = sum(int(r.get("diverged") or 0) for r in rows)
    return (f"[lrservice] selection iter {first['iteration']} ({first['episodes']:.0f} episodes): "
            f"score {checkpoint_score(rows):+.2%}  {starts}" + (f"  {diverged} diverged" if diverged else "")
            + f"  {sum(float(r['selection_child_steps']) for r in rows):,.0f} child steps, {first['wall_s']:.0f} s"
            + f"  (best so far: iter {best})")


def write_selection(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """The selection table as Parquet, atomically (:func:`lrservice.files.write_parquet`)."""
    import pyarrow as pa

    from lrservice.files import write_parquet

    table = pa.table({name: [r.get(name) for r in rows] for name in SELECTION_COLUMNS},
                     schema=pa.schema([pa.field(n, getattr(pa, t)()) for n, t in SELECTION_COLUMNS.items()]))
    return write_parquet(table, path)


def read_selection(path: str | os.PathLike) -> list[dict]:
    """The selection table's rows; a missing file is an empty table."""
    import pyarrow.parquet as pq

    path = Path(path)
    return pq.read_table(path).to_pylist() if path.is_file() else []
