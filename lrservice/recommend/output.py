"""The recommender's files: Parquet tables with fixed schemas, the policy snippet, the ranked table.

Files under ``recommend.output_dir/recommend.name/``:

- ``steps.parquet``: every report of every run (the curves);
- ``runs.parquet``: one row per child run (stage, candidate, seed, LR scale, cost, final metrics);
- ``candidates.parquet``: one row per verified candidate, ranked, with robustness and speed-up;
- ``recommended.yaml``: the winning policy as a ``compare`` arm and as a ``policy_from_dict`` dict;
- ``report.md``: the ranked table and the verdict.

Files are written with :mod:`lrservice.files` (a temp file, then ``os.replace``: never a partial file).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from lrservice.recommend.metrics import sensitivity_key

STEPS_SCHEMA = pa.schema([
    ("stage", pa.string()), ("candidate", pa.string()), ("seed", pa.int64()), ("scale", pa.float64()),
    ("trial_id", pa.string()), ("step", pa.int64()), ("val_loss", pa.float64()), ("val_accuracy", pa.float64()),
    ("train_loss", pa.float64()), ("lr", pa.float64()), ("elapsed_s", pa.float64()),
])

RUNS_SCHEMA = pa.schema([
    ("stage", pa.string()), ("candidate", pa.string()), ("label", pa.string()), ("policy", pa.string()),
    ("seed", pa.int64()), ("scale", pa.float64()), ("trial_id", pa.string()),
    ("steps_done", pa.int64()), ("completed", pa.bool_()), ("diverged", pa.bool_()),
    ("steps_to_target", pa.int64()), ("seconds_to_target", pa.float64()), ("target_accuracy", pa.float64()),
    ("best_val_accuracy", pa.float64()), ("last_val_accuracy", pa.float64()),
    ("final_val_accuracy", pa.float64()), ("final_val_loss", pa.float64()),
    ("test_accuracy", pa.float64()), ("test_loss", pa.float64()), ("top5_accuracy", pa.float64()),
    ("conf_mean_correct", pa.float64()), ("conf_std_correct", pa.float64()), ("class_conf_spread", pa.float64()),
    ("train_eval_loss", pa.float64()), ("train_test_loss_gap", pa.float64()), ("elapsed_s", pa.float64()),
])

_CANDIDATE_FIELDS = [
    ("rank", pa.int64()), ("candidate", pa.string()), ("label", pa.string()), ("policy", pa.string()),
    ("is_reference", pa.bool_()), ("reaches_all", pa.bool_()), ("seeds_reached", pa.int64()), ("num_seeds", pa.int64()),
    ("steps_to_target_mean", pa.float64()), ("steps_to_target_std", pa.float64()),
    ("seconds_to_target_mean", pa.float64()),
    ("final_val_accuracy_mean", pa.float64()), ("final_val_accuracy_std", pa.float64()),
    ("test_accuracy_mean", pa.float64()), ("test_accuracy_std", pa.float64()),
    ("train_test_loss_gap_mean", pa.float64()),
    ("speedup_vs_fix", pa.float64()),
]


def candidates_schema(scales: Sequence[float]) -> pa.Schema:
    """The candidates table: fixed columns plus ``acc_delta_x<s>`` per LR scale and ``acc_delta_worst``."""
    extra = [(sensitivity_key(s), pa.float64()) for s in scales] + [("acc_delta_worst", pa.float64())]
    return pa.schema(_CANDIDATE_FIELDS + extra)


def _cell(value, tp: pa.DataType):
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if pa.types.is_integer(tp):
        return int(value)
    if pa.types.is_floating(tp):
        return float(value)
    if pa.types.is_boolean(tp):
        return bool(value)
    if pa.types.is_string(tp) and not isinstance(value, str):
        return json.dumps(value, sort_keys=True)
    return value


def to_table(rows: Iterable[Mapping], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) as a table with exactly ``schema``'s columns; missing keys are null."""
    rows = list(rows)
    columns = {f.name: [_cell(r.get(f.name), f.type) for r in rows] for f in schema}
    return pa.table(columns, schema=schema)


def read_rows(path: str | os.PathLike) -> list[dict]:
    """A Parquet table back as a list of dicts (nulls as None)."""
    return pq.read_table(path).to_pylist()


def policy_snippet(policy: Mapping, arm_name: str, comment: str) -> str:
    """YAML for ``recommended.yaml``: a ``compare`` arm (``kind: policy``) whose params ``policy_from_dict`` loads."""
    body = yaml.safe_dump({"compare": {"arms": [{"name": arm_name, "kind": "policy", "params": dict(policy)}]}},
                          sort_keys=False, default_flow_style=None)
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += ["# Use as an arm in `lrservice compare` (below), or in your own loop:",
              "#   PolicyScheduler(optimizer, policy_from_dict("
              "yaml.safe_load(open(this))['compare']['arms'][0]['params']))"]
    return "\n".join(lines) + "\n" + body


def _fmt(value, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_table(ranked: Sequence[Mapping], scales: Sequence[float]) -> str:
    """The ranked candidates as a Markdown table (also readable in a terminal)."""
    heads = ["rank", "candidate", "policy", "reached", "steps to target", "final val acc", "test acc",
             "loss gap"] + [f"dAcc x{s:g}" for s in scales] + ["speed-up vs FIX"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for c in ranked:
        steps = (f"{c['steps_to_target_mean']:.0f} ± {c['steps_to_target_std']:.0f}"
                 if c["steps_to_target_mean"] is not None else "never")
        cells = [str(c["rank"]), c["candidate"] + (" (ref)" if c.get("is_reference") else ""), c["label"],
                 f"{c['seeds_reached']}/{c['num_seeds']}", steps,
                 f"{_fmt(c['final_val_accuracy_mean'], '.4f')} ± {_fmt(c['final_val_accuracy_std'], '.4f')}",
                 _fmt(c["test_accuracy_mean"], ".4f"), _fmt(c["train_test_loss_gap_mean"], "+.4f")]
        cells += [_fmt(c.get(sensitivity_key(s)), "+.3f") for s in scales]
        cells.append(_fmt(c.get("speedup_vs_fix"), ".2f"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
