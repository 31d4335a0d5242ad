"""The comparison report: a ranked table of arms and plots, from a run dir's Parquet files.

Writes ``summary.csv``, ``val_loss.png`` (validation loss per arm, mean ± std band over
seeds), ``lr.png`` (the LR per arm, same band), ``report.md`` and ``report.html`` next to
the Parquet files. Only the eval phase is ranked; the tune phase picks parameters.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Callable

import pandas as pd
from matplotlib.figure import Figure  # Agg canvas: no display needed

from lrservice.compare.results import (STEPS_FILE, STEPS_SCHEMA, TRIALS_FILE, TRIALS_SCHEMA, arm_summary,
                                       format_summary, read_table)

PLOTS = ("val_loss.png", "lr.png")


def load_run(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(steps, trials)`` DataFrames of a run dir, schema-checked."""
    run_dir = Path(run_dir)
    for name in (STEPS_FILE, TRIALS_FILE):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name} not found; is {run_dir} a `lrservice compare` run dir?")
    return read_table(run_dir / STEPS_FILE, STEPS_SCHEMA), read_table(run_dir / TRIALS_FILE, TRIALS_SCHEMA)


def curves(steps: pd.DataFrame, column: str, phase: str = "eval") -> pd.DataFrame:
    """Per arm and step: mean and std over seeds of ``column`` (columns arm, step, mean, std, n)."""
    df = steps[steps["phase"] == phase]
    g = df.groupby(["arm", "step"], sort=True)[column]
    out = g.agg(mean="mean", std=lambda s: s.std(ddof=0), n="count").reset_index()
    return out


def _plot(steps: pd.DataFrame, column: str, ylabel: str, path: Path, log_y: bool, order: list[str]) -> None:
    data = curves(steps, column)
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for arm in order:
        c = data[data["arm"] == arm]
        if c.empty:
            continue
        line, = ax.plot(c["step"], c["mean"], lw=1.5, label=arm)
        ax.fill_between(c["step"], c["mean"] - c["std"], c["mean"] + c["std"], color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("child step")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    ax.set_title(f"{ylabel} per arm (eval phase, mean ± std over seeds)", fontsize=10)
    fig.savefig(path, dpi=100)


def build_report(run_dir: str | Path, log: Callable[[str], None] = print) -> Path:
    """Write the table, plots and ``report.md`` / ``report.html``; returns the Markdown path."""
    run_dir = Path(run_dir)
    steps, trials = load_run(run_dir)
    summary = arm_summary(trials)
    summary.to_csv(run_dir / "summary.csv", index=False)
    table = format_summary(summary)
    order = list(summary["arm"]) if not summary.empty else []
    _plot(steps, "val_loss", "validation loss", run_dir / PLOTS[0], log_y=True, order=order)
    _plot(steps, "lr", "learning rate", run_dir / PLOTS[1], log_y=True, order=order)
    meta_path = run_dir / "config.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    task = meta.get("config", {}).get("task", {})
    target = trials["target_accuracy"].dropna()
    title = f"lrservice comparison {meta.get('run_id', run_dir.name)}"
    about = (f"Task: {task.get('dataset', '?')} / {task.get('model', '?')}, {task.get('steps', '?')} steps, "
             f"batch {task.get('batch_size', '?')}, optimizer {task.get('optimizer', '?')}. "
             f"Eval trials: {int((trials['phase'] == 'eval').sum())}; tune trials: {int((trials['phase'] == 'tune').sum())}. "
             f"Target accuracy (validation): {target.iloc[0] if len(target) else '?'}.")
    winners = _winners(trials)
    md = [f"# {title}", "", about, "",
          "Arms ranked by mean final validation loss over held-out seeds (mean ± std; steps to target over the seeds that reached it).",
          "", table, "", "## Parameters evaluated", ""]
    md += [f"- **{arm}**: `{params}`" for arm, params in winners.items()]
    md += ["", "## Validation loss", "", f"![validation loss]({PLOTS[0]})", "",
           "## Learning rate", "", f"![learning rate]({PLOTS[1]})", "",
           f"Data: [{STEPS_FILE}]({STEPS_FILE}), [{TRIALS_FILE}]({TRIALS_FILE}), [summary.csv](summary.csv). "
           f"Curves in TensorBoard: `tensorboard --logdir {run_dir}`.", ""]
    md_path = run_dir / "report.md"
    md_path.write_text("\n".join(md))
    _html(run_dir / "report.html", title, about, summary, winners)
    log(f"[lrservice] report written: {md_path}, {run_dir / 'report.html'}, {', '.join(PLOTS)}")
    return md_path


def _winners(trials: pd.DataFrame) -> dict[str, str]:
    """Each eval arm's params (PBT members differ; the first is shown)."""
    df = trials[trials["phase"] == "eval"]
    return {arm: g["params"].iloc[0] for arm, g in df.groupby("arm", sort=False)}


def _html(path: Path, title: str, about: str, summary: pd.DataFrame, winners: dict[str, str]) -> None:
    table = summary.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="n/a") if not summary.empty else "<p>no finished eval trials</p>"
    params = "".join(f"<li><b>{html.escape(a)}</b>: <code>{html.escape(p)}</code></li>" for a, p in winners.items())
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(about)}</p><h2>Ranking (eval phase)</h2>{table}"
        f"<h2>Parameters</h2><ul>{params}</ul>"
        f"<h2>Validation loss</h2><img src='{PLOTS[0]}'><h2>Learning rate</h2><img src='{PLOTS[1]}'></body></html>")
