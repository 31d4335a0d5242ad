"""PBT populations as data: lineage, the deployed member, its schedule as a replayable policy.

Pandas only, no Ray. Members of one population all start from the held-out seed's weights
and batch order and differ in LR; an exploit copies the donor's whole state (weights,
optimizer, batch cursor) at a perturbation step and continues at a new LR. So the deployed
member's history is one continuous run of that seed whose LR is piecewise constant, with
changes at the exploit steps along its lineage — and replaying that piecewise-constant
schedule from scratch on the same seed trains the same model.

Step rows of members carry ``member``, ``parent_trial_id`` and ``parent_step``: the most
recent exploit at or before that row (null: the member's own start).
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping

import pandas as pd
import yaml


def exploits(rows: pd.DataFrame) -> pd.DataFrame:
    """The exploit log of member step rows: one row per (trial, parent step) where a member
    continued another's checkpoint, with the LR before (``old_lr``) and after (``new_lr``)."""
    out = []
    for trial_id, g in rows.sort_values("step").groupby("trial_id", sort=False):
        last_lr, last_parent = None, None
        for r in g.itertuples():
            parent = (r.parent_trial_id, r.parent_step) if isinstance(r.parent_trial_id, str) else None
            if parent is not None and parent != last_parent:
                donor = rows[rows["trial_id"] == r.parent_trial_id]
                out.append({"run_id": r.run_id, "arm": r.arm, "seed": int(r.seed), "trial_id": trial_id,
                            "member": _int(r.member), "step": int(r.parent_step), "parent_trial_id": r.parent_trial_id,
                            "parent_member": _int(donor["member"].iloc[0]) if len(donor) else None,
                            "old_lr": last_lr, "new_lr": float(r.lr)})
            last_parent, last_lr = parent, float(r.lr)
    columns = ["run_id", "arm", "seed", "trial_id", "member", "step", "parent_trial_id", "parent_member",
               "old_lr", "new_lr"]
    return pd.DataFrame(out, columns=columns)


def deployed_path(rows: pd.DataFrame, trial_id: str) -> pd.DataFrame:
    """The history of the model ``trial_id`` ends with: its rows after its last exploit, the
    donor's path up to that exploit step before them (recursively). Sorted by step."""
    mine = rows[rows["trial_id"] == trial_id].sort_values("step")
    parents = mine.dropna(subset=["parent_trial_id"])
    if parents.empty:
        return mine
    last = parents.iloc[-1]
    cut = int(last["parent_step"])
    before = deployed_path(rows[rows["step"] <= cut], str(last["parent_trial_id"]))
    return pd.concat([before[before["step"] <= cut], mine[mine["step"] > cut]], ignore_index=True)


def deployed_member(member_trials: pd.DataFrame) -> Mapping[str, Any]:
    """The member PBT would deploy: best final validation loss (a diverged member never)."""
    ok = member_trials[~member_trials["diverged"].astype(bool) & member_trials["final_val_loss"].notna()]
    pool = ok if len(ok) else member_trials
    return pool.sort_values(["final_val_loss", "trial_id"], na_position="last", kind="stable").iloc[0].to_dict()


def schedule_policy(path: pd.DataFrame) -> dict:
    """A deployed path's LR as a policy dict: FIX, or a composite of FIX segments whose
    boundaries are the steps after which the LR changed (row at step t: LR of step t-1)."""
    path = path.sort_values("step")
    lrs, bounds, previous_step = [], [], 0
    for step, lr in zip(path["step"], path["lr"]):
        if not lrs or not math.isclose(lr, lrs[-1], rel_tol=1e-12):
            if lrs:
                bounds.append(int(previous_step))
            lrs.append(float(lr))
        previous_step = step
    if len(lrs) == 1:
        return {"name": "FIX", "k0": lrs[0]}
    return {"compose": [{"name": "FIX", "k0": lr} for lr in lrs], "boundaries": bounds}


def replay_arms(steps: pd.DataFrame, arms: Iterable[str] | None = None) -> list[dict]:
    """Compare arms (``kind: policy``) replaying each PBT arm's deployed schedule, one per seed."""
    ev = steps[(steps["phase"] == "eval") & steps["member"].notna()]
    if arms is not None:
        ev = ev[ev["arm"].isin(list(arms))]
    out = []
    for (arm, seed), g in ev.groupby(["arm", "seed"], sort=True):
        out.append({"name": f"{arm}-replay-s{int(seed)}", "kind": "policy", "params": schedule_policy(g)})
    return out


def replay_yaml(arms: list[dict]) -> str:
    """The replay arms as a YAML list to paste under ``compare.arms``."""
    return yaml.safe_dump(json.loads(json.dumps(arms)), sort_keys=False, default_flow_style=None)


def _int(value) -> int | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)
