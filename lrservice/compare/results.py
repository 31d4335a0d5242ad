"""Result tables: the Parquet schemas, rows from Tune results, dedupe, summaries.

Two tables per run (documented in docs/compare.md): ``steps`` has one row per trial per
report (every ``task.eval_every`` steps), ``trials`` one summary row per finished trial.
A trial that Tune restarted from a checkpoint reports some steps twice; rows are
deduplicated on ``(trial_id, step)``, keeping the later report. Files are written with
:func:`lrservice.files.write_parquet`, so a reader never sees a partial file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lrservice.kinds import baselines, get_kind, tuned_winners
from lrservice.stats import compare_paired

STEPS_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("phase", pa.string()),
    ("arm", pa.string()),
    ("trial_id", pa.string()),
    ("params", pa.string()),
    ("seed", pa.int64()),
    ("step", pa.int64()),
    ("train_loss", pa.float64()),
    ("val_loss", pa.float64()),
    ("val_accuracy", pa.float64()),
    ("lr", pa.float64()),
    ("elapsed_s", pa.float64()),
    ("member", pa.int64()),
    ("parent_trial_id", pa.string()),
    ("parent_step", pa.int64()),
])

TRIALS_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("phase", pa.string()),
    ("arm", pa.string()),
    ("trial_id", pa.string()),
    ("params", pa.string()),
    ("seed", pa.int64()),
    ("steps_done", pa.int64()),
    ("diverged", pa.bool_()),
    ("final_val_loss", pa.float64()),
    ("final_val_accuracy", pa.float64()),
    ("test_loss", pa.float64()),
    ("test_accuracy", pa.float64()),
    ("top5_accuracy", pa.float64()),
    ("conf_mean_correct", pa.float64()),
    ("conf_std_correct", pa.float64()),
    ("class_conf_spread", pa.float64()),
    ("train_test_loss_gap", pa.float64()),
    ("steps_to_target", pa.int64()),
    ("seconds_to_target", pa.float64()),
    ("wall_s", pa.float64()),
    ("target_accuracy", pa.float64()),
    ("member", pa.int64()),
    ("cost_steps", pa.int64()),
    ("cost_wall_s", pa.float64()),
    ("cost_note", pa.string()),
])

EXPLOITS_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("arm", pa.string()),
    ("seed", pa.int64()),
    ("trial_id", pa.string()),
    ("member", pa.int64()),
    ("step", pa.int64()),
    ("parent_trial_id", pa.string()),
    ("parent_member", pa.int64()),
    ("old_lr", pa.float64()),
    ("new_lr", pa.float64()),
])

STEPS_FILE = "steps.parquet"
TRIALS_FILE = "trials.parquet"
EXPLOITS_FILE = "pbt_exploits.parquet"
STEP_METRICS = ("train_loss", "val_loss", "val_accuracy", "lr", "elapsed_s")
_TRIAL_METRICS = ("steps_done", "test_loss", "test_accuracy", "top5_accuracy", "conf_mean_correct",
                  "conf_std_correct", "class_conf_spread", "train_test_loss_gap", "steps_to_target",
                  "seconds_to_target", "target_accuracy")


def params_json(spec: Mapping[str, Any]) -> str:
    """A trial's params as canonical JSON; a PBT trial's (final) ``lr`` is included."""
    params = dict(spec.get("params", {}))
    if "lr" in spec and spec.get("kind") and get_kind(spec["kind"]).population:
        params["lr"] = spec["lr"]
    return json.dumps(params, sort_keys=True, default=str)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def rows_from_reports(spec: Mapping[str, Any], trial_id: str, reports: Iterable[Mapping[str, Any]],
                      wall_s: float | None) -> tuple[list[dict], dict | None]:
    """Step rows and the summary row (None when the trial never finished) from one trial's reports.

    ``reports`` are the trial's reported metric dicts in order, including any that a
    restart repeated; later reports of a step replace earlier ones.
    """
    member = spec.get("member")
    base = {"run_id": spec["run_id"], "phase": spec["phase"], "arm": spec["arm"], "trial_id": trial_id,
            "params": params_json(spec), "seed": int(spec["seed"]), "member": None if member is None else int(member)}
    by_step: dict[int, dict] = {}
    final = None
    for report in reports:
        step = _number(report.get("step"))
        if step is None:
            continue
        parent = report.get("parent_trial_id")
        parent_step = _number(report.get("parent_step"))
        by_step[int(step)] = {**base, "step": int(step), **{k: _number(report.get(k)) for k in STEP_METRICS},
                              "parent_trial_id": parent if isinstance(parent, str) else None,
                              "parent_step": None if parent_step is None else int(parent_step)}
        if _is_true(report.get("final")):
            final = report
    steps = [by_step[s] for s in sorted(by_step)]
    if final is None:
        return steps, None
    summary = {**{k: v for k, v in base.items()}, **{k: _number(final.get(k)) for k in _TRIAL_METRICS},
               "diverged": _is_true(final.get("diverged")),
               "final_val_loss": _number(final.get("val_loss")),
               "final_val_accuracy": _number(final.get("val_accuracy")),
               "wall_s": _number(wall_s)}
    for key in ("steps_done", "steps_to_target"):
        if summary[key] is not None:
            summary[key] = int(summary[key])
    return steps, summary


def _is_true(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    try:
        return bool(value) and not (isinstance(value, float) and math.isnan(value))
    except (TypeError, ValueError):
        return False


def to_table(rows: list[dict] | pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Rows as an Arrow table with exactly ``schema``'s columns and types (None stays null)."""
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    columns = {}
    for f in schema:
        values = [_cell(r.get(f.name)) for r in rows]
        columns[f.name] = pa.array(values, type=f.type)
    return pa.table(columns, schema=schema)


def _cell(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
        if isinstance(value, float) and math.isnan(value):
            return None
    return value


def dedupe_steps(table: pa.Table) -> pa.Table:
    """Keep the last row of each ``(phase, trial_id, step)``, sorted by trial and step."""
    df = table.to_pandas()
    if df.empty:
        return table
    df = df.drop_duplicates(["phase", "trial_id", "step"], keep="last").sort_values(["trial_id", "step"], kind="stable")
    return to_table(df, table.schema)


def dedupe_trials(table: pa.Table) -> pa.Table:
    """Keep the last summary row of each ``(phase, trial_id)`` (a deployed PBT member has a
    ``pbt`` row and an ``eval`` row)."""
    df = table.to_pandas()
    if df.empty:
        return table
    df = df.drop_duplicates(["phase", "trial_id"], keep="last")
    return to_table(df, table.schema)


def read_table(path: str | os.PathLike, schema: pa.Schema) -> pd.DataFrame:
    """A Parquet file as a DataFrame, checked against ``schema`` (column names and types)."""
    table = pq.read_table(path)
    if not table.schema.equals(schema, check_metadata=False):
        raise ValueError(f"{path}: schema {table.schema} does not match lrservice's {schema}")
    return table.to_pandas()


def combine(parts: Iterable[str | os.PathLike], schema: pa.Schema, key: str) -> pa.Table:
    """Concatenate part files in order and dedupe (``steps`` or ``trials`` by ``key``)."""
    tables = [pq.read_table(p) for p in parts if Path(p).exists()]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if key == "exploits":
        return table
    return dedupe_steps(table) if key == "steps" else dedupe_trials(table)


def baseline_arms(config: Mapping[str, Any]) -> list[str]:
    """Names of the tuned baselines (arms of a kind in :func:`lrservice.kinds.baselines`, with a grid)
    of a plain config dict; the untuned baselines when none is tuned."""
    arms = config.get("compare", {}).get("arms", [])
    kinds = baselines()
    tuned = [a["name"] for a in arms if a.get("kind") in kinds and a.get("grid")]
    return tuned or [a["name"] for a in arms if a.get("kind") in kinds]


PICKED_ON = {"tune": "tune seeds", "eval": "held-out seeds"}  # pick_reference's rule -> the vs_picked_on column


def pick_reference(trials: pd.DataFrame, candidates: Iterable[str], phase: str = "eval") -> tuple[str | None, str]:
    """The reference of the paired statistics among ``candidates`` (baseline arms with rows in
    ``phase``), and the rule that picked it: ``"tune"``, ``"eval"`` or ``""`` (no candidate).

    ``tune``: each candidate's tuned winner is the point of its tune-phase rows with the lowest
    mean final validation loss (a diverged or missing loss counts as +inf), as
    :func:`lrservice.kinds.tuned_winners` picks it for the eval phase; the candidate whose
    winner scored lowest is the reference (a candidate without tune rows scores +inf; ties go to
    the first name). So the reference is chosen before any held-out seed is looked at, never on
    the seeds it is then compared on. ``eval``: only when no candidate has a tune row (untuned
    baselines), the candidate with the lowest mean final validation loss in ``phase``.
    """
    names = list(candidates)
    if not names:
        return None, ""
    tune = trials[(trials["phase"] == "tune") & trials["arm"].isin(names)]
    if len(tune):
        rows = ({**r, "params": json.loads(r["params"]) if isinstance(r["params"], str) else r["params"]}
                for r in tune.to_dict("records"))
        scores = {arm: score for arm, (_, score) in tuned_winners(rows).items()}
        return min(sorted(names), key=lambda arm: scores.get(arm, math.inf)), "tune"
    means = trials[trials["phase"] == phase].groupby("arm")["final_val_loss"].mean().fillna(math.inf)
    return min(sorted(names), key=lambda arm: means.get(arm, math.inf)), "eval"


def arm_summary(trials: pd.DataFrame, phase: str = "eval", baselines: Iterable[str] = ()) -> pd.DataFrame:
    """Ranked arms of ``phase``: mean and std over seeds, cost, and the paired comparison.

    Diverged trials count in ``diverged`` and their NaN losses are left out of means;
    ``reached`` counts seeds that hit the target accuracy and ``steps_to_target`` is
    averaged over those. ``cost_steps`` / ``cost_wall_s`` are means over seeds of what each
    result cost (:mod:`lrservice.compare.cost`). The reference ``vs`` is the one of
    ``baselines`` (those that ran in ``phase``) whose tuned winner scored the lowest mean final
    validation loss on the tune seeds; on ``phase``'s own seeds only when no baseline has tune
    rows (:func:`pick_reference`); ``vs_picked_on`` says which (``tune seeds`` / ``held-out
    seeds``). ``diff_*`` are the per-seed test-loss differences arm - reference (mean, 95%
    bootstrap CI) and ``verdict`` reads the CI.
    """
    df = trials[trials["phase"] == phase]
    rows = []
    for arm, g in df.groupby("arm", sort=False):
        row = {"arm": arm, "seeds": int(len(g)), "diverged": int(g["diverged"].sum()),
               "reached": int(g["steps_to_target"].notna().sum())}
        for col in ("final_val_loss", "test_loss", "test_accuracy", "steps_to_target"):
            values = g[col].astype("float64")
            row[f"{col}_mean"] = float(values.mean()) if values.notna().any() else math.nan
            row[f"{col}_std"] = float(values.std(ddof=0)) if values.notna().any() else math.nan
        for col in ("cost_steps", "cost_wall_s"):
            values = g[col].astype("float64") if col in g else pd.Series(dtype="float64")
            row[col] = float(values.mean()) if values.notna().any() else math.nan
        notes = g["cost_note"].dropna() if "cost_note" in g else pd.Series(dtype=object)
        row["cost_note"] = str(notes.iloc[0]) if len(notes) else ""
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out = out.sort_values(["final_val_loss_mean", "arm"], na_position="last", kind="stable").reset_index(drop=True)
    out.insert(0, "rank", range(1, len(out) + 1))
    reference, rule = pick_reference(trials, [a for a in baselines if a in set(out["arm"])], phase)
    paired = {"vs": [], "diff_n": [], "diff_mean": [], "diff_ci_low": [], "diff_ci_high": [], "verdict": []}
    ref_loss = _by_seed(df, reference) if reference else {}
    for arm in out["arm"]:
        if reference is None or arm == reference:
            values = (reference or "", 0, math.nan, math.nan, math.nan, "reference" if reference else "n/a")
        else:
            p = compare_paired(_by_seed(df, arm), ref_loss)
            values = (reference, p.n, p.mean, p.ci_low, p.ci_high, p.verdict)
        for key, value in zip(paired, values):
            paired[key].append(value)
    for key, values in paired.items():
        out[key] = values
    out["vs_picked_on"] = PICKED_ON.get(rule, "")
    return out


def _by_seed(df: pd.DataFrame, arm: str) -> dict[int, float]:
    g = df[df["arm"] == arm]
    return {int(s): float(v) for s, v in zip(g["seed"], g["test_loss"].astype("float64"))}


SUMMARY_HEAD = ["rank", "arm", "seeds", "final val loss", "test loss", "test acc",
                "Δ test loss vs best baseline [95% CI]",
                "verdict", "steps to target", "reached", "diverged", "cost: child steps", "cost: trial s"]


def summary_cells(r: Mapping[str, Any]) -> list[str]:
    """One summary row as display strings (mean ± std, CI, cost), shared by text and HTML."""
    pm = lambda c, f: "n/a" if _nan(r[f"{c}_mean"]) else f"{r[f'{c}_mean']:{f}} ± {r[f'{c}_std']:{f}}"
    if r["verdict"] in ("reference", "n/a"):
        diff = "(reference)" if r["verdict"] == "reference" else "n/a"
    elif _nan(r["diff_ci_low"]):
        diff = "n/a" if _nan(r["diff_mean"]) else f"{r['diff_mean']:+.4f} (n={r['diff_n']})"
    else:
        diff = f"{r['diff_mean']:+.4f} [{r['diff_ci_low']:+.4f}, {r['diff_ci_high']:+.4f}]"
    cost_s = "n/a" if _nan(r["cost_steps"]) else f"{r['cost_steps']:,.0f}"
    cost_w = "n/a" if _nan(r["cost_wall_s"]) else f"{r['cost_wall_s']:.1f}"
    return [str(r["rank"]), str(r["arm"]), str(r["seeds"]), pm("final_val_loss", ".4f"), pm("test_loss", ".4f"),
            pm("test_accuracy", ".4f"), diff, str(r["verdict"]), pm("steps_to_target", ".0f"),
            f"{r['reached']}/{r['seeds']}", str(r["diverged"]), cost_s, cost_w]


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def reference_note(summary: pd.DataFrame) -> str:
    """One sentence: which arm the Δ column pairs with and on which seeds it was picked."""
    refs = summary[summary["verdict"] == "reference"] if not summary.empty else summary
    if refs.empty:
        return "No baseline arm: no paired comparison."
    arm = refs.iloc[0]["arm"]
    if refs.iloc[0]["vs_picked_on"] == PICKED_ON["tune"]:
        return (f"Reference (Δ vs): {arm}, picked on the tune seeds: of the baselines, its tuned point had the "
                "lowest mean final validation loss there (the held-out seeds played no part in picking it).")
    return (f"Reference (Δ vs): {arm}, picked on the held-out seeds: no baseline was tuned, so the one with the "
            "lowest mean final validation loss on them.")


def format_summary(summary: pd.DataFrame) -> str:
    """The ranked table as fixed-width text (also valid Markdown), then :func:`reference_note`."""
    if summary.empty:
        return "(no finished eval trials)"
    lines = ["| " + " | ".join(SUMMARY_HEAD) + " |", "|" + "|".join("---" for _ in SUMMARY_HEAD) + "|"]
    for _, r in summary.iterrows():
        lines.append("| " + " | ".join(summary_cells(r)) + " |")
    return "\n".join(lines + ["", reference_note(summary)])
