"""What each result cost: child steps and trial seconds spent to produce it. Pandas only, no Ray.

Every ``trials`` row gets ``cost_steps``, ``cost_wall_s`` and ``cost_note``:

- a tune trial: its own steps and seconds;
- an eval result of a tuned arm: its own run plus the arm's whole tune phase
  (grid points x tune seeds x steps) — the tuning had to happen to produce any of its seeds;
- a PBT result (the deployed member of one seed's population): every member of that
  population (population x steps);
- a controller result: its own run plus the controller's PPO training when this run trained
  it (episodes x child steps), or nothing extra for a pretrained controller ("reused");
- a fixed-params arm: its own run.

Seconds are summed trial seconds (Tune's ``time_total_s``), i.e. compute, not elapsed time of
a parallel phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd

from lrservice.control.checkpoint import output_dir_of, resolve_checkpoint, training_record
from lrservice.control.runs import run_dirs
from lrservice.control.training import read_log


@dataclass(frozen=True)
class ExtraCost:
    """Work outside Tune trials that an arm's results depend on (controller training)."""

    steps: int
    wall_s: float
    note: str


def controller_cost(checkpoint: str | Path, trained_here: bool, action_every: int) -> ExtraCost:
    """A controller's training cost from its export or ``train-controller`` output (log or metadata).

    Child steps are the recorded ones (twins included); older checkpoints without that record
    fall back to env steps x ``action_every``. A selection pick costs the whole run it was picked
    from plus the selection (tuning cosine, scoring checkpoints).
    """
    ckpt = resolve_checkpoint(checkpoint)
    meta = training_record(ckpt)
    child_steps = int(meta.get("child_steps") or 0) or int(meta.get("env_steps") or 0) * int(action_every)
    child_steps = max(child_steps, int(meta.get("run_child_steps") or 0))
    selection = int(meta.get("selection_child_steps") or 0)
    spent = f"{child_steps} child steps" + (f" + {selection} selecting it" if selection else "")
    if not trained_here:
        return ExtraCost(0, 0.0, f"pretrained ({spent}), reused")
    child_steps += selection
    out = output_dir_of(ckpt)
    runs = run_dirs(out) or [out]  # several runs of a recipe: every run's log
    logs = [read_log(run / "training_log.parquet") for run in runs]
    logs = [rows for rows in logs if rows]
    wall = float(sum(rows[-1]["wall_s"] for rows in logs)) if logs else math.nan
    episodes = int(sum(r["episodes"] for rows in logs for r in rows if r["episodes"] == r["episodes"]))
    iterations = "+".join(str(rows[-1]["iteration"]) for rows in logs) if logs else meta.get("iteration")
    return ExtraCost(child_steps, wall, f"controller trained here: {iterations} PPO iterations, "
                                        f"{episodes} episodes, {spent}")


def add_costs(trials: pd.DataFrame, extra: Mapping[str, ExtraCost] | None = None) -> pd.DataFrame:
    """``trials`` with ``cost_steps``, ``cost_wall_s`` and ``cost_note`` filled (see module doc)."""
    extra = dict(extra or {})
    out = trials.copy()
    steps = out["steps_done"].fillna(0).astype("int64")
    wall = out["wall_s"].fillna(0.0).astype("float64")
    cost_steps, cost_wall, notes = steps.copy(), wall.copy(), pd.Series("own run", index=out.index, dtype=object)
    tune = out[out["phase"] == "tune"]
    members = out[out["phase"] == "pbt"]
    for i, row in out.iterrows():
        if row["phase"] == "tune":
            notes[i] = "one tune trial"
            continue
        if row["phase"] == "pbt":
            notes[i] = "one PBT member"
            continue
        arm = row["arm"]
        mine = tune[tune["arm"] == arm]
        population = members[(members["arm"] == arm) & (members["seed"] == row["seed"])]
        if len(population):
            cost_steps[i] = int(population["steps_done"].fillna(0).sum())
            cost_wall[i] = float(population["wall_s"].fillna(0).sum())
            notes[i] = f"population {len(population)} x {int(population['steps_done'].max())} steps"
        elif len(mine):
            cost_steps[i] += int(mine["steps_done"].fillna(0).sum())
            cost_wall[i] += float(mine["wall_s"].fillna(0).sum())
            notes[i] = (f"grid {mine['params'].nunique()} x {mine['seed'].nunique()} tune seeds x "
                        f"{int(mine['steps_done'].max())} steps + own run")
        elif arm in extra:
            cost_steps[i] += extra[arm].steps
            cost_wall[i] += 0.0 if math.isnan(extra[arm].wall_s) else extra[arm].wall_s
            notes[i] = f"{extra[arm].note} + own run"
        else:
            notes[i] = "fixed params: own run"
    out["cost_steps"], out["cost_wall_s"], out["cost_note"] = cost_steps, cost_wall, notes
    return out
