"""The comparison report: a ranked table of arms and plots, from a run dir's Parquet files.

Writes ``summary.csv``, ``val_loss.png`` (validation loss per arm, mean ± std band over
seeds), ``lr.png`` (the LR per arm, same band), ``report.md`` and ``report.html`` next to
the Parquet files. Only the eval phase is ranked; the tune phase picks parameters.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Callable

import pandas as pd
from matplotlib.figure import Figure  # Agg canvas: no display needed

from lrservice.compare.pbt import replay_arms, replay_yaml
from lrservice.compare.results import (
    STEPS_FILE,
    STEPS_SCHEMA,
    SUMMARY_HEAD,
    TRIALS_FILE,
    TRIALS_SCHEMA,
    arm_summary,
    baseline_arms,
    format_summary,
    read_table,
    reference_note,
    summary_cells,
)
from lrservice.files import write_text

PLOTS = ("val_loss.png", "lr.png")


def load_run(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(steps, trials)`` DataFrames of a run dir, schema-checked."""
    run_dir = Path(run_dir)
    for name in (STEPS_FILE, TRIALS_FILE):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name} not found; is {run_dir} a `lrservice compare` run dir?")
    return read_table(run_dir / STEPS_FILE, STEPS_SCHEMA), read_table(run_dir / TRIALS_FILE, TRIALS_SCHEMA)


def _meta(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_summary(run_dir: str | Path, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ranked per-arm table of a run dir's eval phase (:func:`arm_summary`, baselines from its config.json)."""
    run_dir = Path(run_dir)
    if trials is None:
        trials = load_run(run_dir)[1]
    return arm_summary(trials, baselines=baseline_arms(_meta(run_dir).get("config", {})))


def curves(steps: pd.DataFrame, column: str, phase: str = "eval") -> pd.DataFrame:
    """Per arm and step: mean and std over seeds of ``column`` (columns arm, step, mean, std, n)."""
    df = steps[steps["phase"] == phase]
    g = df.groupby(["arm", "step"], sort=True)[column]
    out = g.agg(mean="mean", std=lambda s: s.std(ddof=0), n="count").reset_index()
    return out


def _plot(steps: pd.DataFrame, column: str, ylabel: str, path: Path, log_y: bool, order: list[str]) -> None:
    """Mean ± std band per arm over seeds; a PBT arm (rows with ``member``) as one thin line
    per seed — its deployed schedule differs per seed, a mean would hide it."""
    ev = steps[steps["phase"] == "eval"]
    data = curves(steps, column)
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for arm in order:
        rows = ev[ev["arm"] == arm]
        if rows.empty:
            continue
        if rows["member"].notna().any():
            color = None
            for seed, g in rows.sort_values("step").groupby("seed"):
                line, = ax.plot(g["step"], g[column], lw=0.9, color=color, alpha=0.8,
                                label=f"{arm} (deployed, per seed)" if color is None else None)
                color = line.get_color()
            continue
        c = data[data["arm"] == arm]
        line, = ax.plot(c["step"], c["mean"], lw=1.5, label=arm)
        ax.fill_between(c["step"], c["mean"] - c["std"], c["mean"] + c["std"], color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("child step")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    ax.set_title(f"{ylabel} per arm (eval phase, mean ± std over seeds; PBT: deployed member per seed)", fontsize=10)
    fig.savefig(path, dpi=100)


def build_report(run_dir: str | Path, log: Callable[[str], None] = print, echo: bool = False) -> Path:
    """Write the table, plots and ``report.md`` / ``report.html``; returns the Markdown path.

    ``echo``: also log the ranked table and the PBT replay schedules (``lrservice report``)."""
    run_dir = Path(run_dir)
    steps, trials = load_run(run_dir)
    meta = _meta(run_dir)
    summary = run_summary(run_dir, trials)
    summary.to_csv(run_dir / "summary.csv", index=False)
    table = format_summary(summary)
    order = list(summary["arm"]) if not summary.empty else []
    _plot(steps, "val_loss", "validation loss", run_dir / PLOTS[0], log_y=True, order=order)
    _plot(steps, "lr", "learning rate", run_dir / PLOTS[1], log_y=True, order=order)
    task = meta.get("config", {}).get("task", {})
    target = trials["target_accuracy"].dropna()
    title = f"lrservice comparison {meta.get('run_id', run_dir.name)}"
    members = trials[trials["phase"] == "pbt"]
    about = (f"Task: {task.get('dataset', '?')} / {task.get('model', '?')}, {task.get('steps', '?')} steps, "
             f"batch {task.get('batch_size', '?')}, optimizer {task.get('optimizer', '?')}. "
             f"Eval results: {int((trials['phase'] == 'eval').sum())}; "
             f"tune trials: {int((trials['phase'] == 'tune').sum())}; "
             f"PBT members: {len(members)}. Target accuracy (validation): {target.iloc[0] if len(target) else '?'}.")
    how = ("Arms ranked by mean final validation loss over held-out seeds (mean ± std; steps to target over the "
           "seeds that reached it). Δ test loss: per-seed difference to the reference baseline on the same seeds, "
           "mean and 95% bootstrap CI; verdict better / no difference / worse from the CI. Cost: child steps and "
           "trial seconds spent per result, tuning / population / controller training included. A PBT result is "
           "the member PBT deploys for that seed (best final validation loss); members are not seeds.")
    winners = _winners(trials)
    costs = {r["arm"]: r["cost_note"] for _, r in summary.iterrows()} if not summary.empty else {}
    replays = replay_arms(steps)
    replay = replay_yaml(replays) if replays else ""
    md = [f"# {title}", "", about, "", how, "", table, "", "## Parameters evaluated", ""]
    md += [f"- **{arm}**: `{params}`" for arm, params in winners.items()]
    md += ["", "## Cost", ""] + [f"- **{arm}**: {note}" for arm, note in costs.items()]
    md += ["", "## Validation loss", "", f"![validation loss]({PLOTS[0]})", "",
           "## Learning rate", "", f"![learning rate]({PLOTS[1]})", ""]
    if replay:
        md += ["## PBT deployed schedules (replayable compare arms)", "", "```yaml", replay.rstrip(), "```", ""]
    md += [f"Data: [{STEPS_FILE}]({STEPS_FILE}), [{TRIALS_FILE}]({TRIALS_FILE}), [summary.csv](summary.csv). "
           f"Curves in TensorBoard: `tensorboard --logdir {run_dir / 'tensorboard'}`.", ""]
    md_path = run_dir / "report.md"
    write_text(md_path, "\n".join(md))
    _html(run_dir, title, about, how, summary, winners, costs, replay)
    if echo:
        log(table)
        if replay:
            log("[lrservice] PBT deployed schedules as compare arms (paste under compare.arms to replay):")
            log(replay.rstrip())
    log(f"[lrservice] report written: {md_path}, {run_dir / 'report.html'}, {', '.join(PLOTS)}")
    return md_path


def _winners(trials: pd.DataFrame) -> dict[str, str]:
    """Each eval arm's params (a PBT arm: its deployed members' final LRs differ; the first is shown)."""
    df = trials[trials["phase"] == "eval"]
    return {arm: g["params"].iloc[0] for arm, g in df.groupby("arm", sort=False)}


CSS = ("body{font-family:system-ui,sans-serif;font-size:14px;max-width:1300px;margin:8px auto;padding:0 8px}"
       "table{border-collapse:collapse;font-size:12.5px;width:100%}"
       "td,th{border:1px solid #ccc;padding:2px 5px;text-align:right;white-space:nowrap}"
       "th{background:#f3f3f3;white-space:normal;vertical-align:bottom}td:nth-child(2),th:nth-child(2){text-align:left}"
       "td.better{background:#e3f6e3}td.worse{background:#fbe3e3}"
       "img{max-width:100%;height:auto}pre{background:#f6f6f6;padding:6px;overflow-x:auto}")


def _html(run_dir: Path, title: str, about: str, how: str, summary: pd.DataFrame, winners: dict[str, str],
          costs: dict[str, str], replay: str) -> None:
    """report.html: the Markdown table's cells, fits a ~1366 px laptop screen, plots inlined."""
    note = "" if summary.empty else f"<p>{html.escape(reference_note(summary))}</p>"
    if summary.empty:
        table = "<p>no finished eval trials</p>"
    else:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in SUMMARY_HEAD)
        body = []
        for _, r in summary.iterrows():
            cells = summary_cells(r)
            verdict_col = SUMMARY_HEAD.index("verdict")
            tds = "".join(f"<td class='{html.escape(c)}'>{html.escape(c)}</td>" if i == verdict_col
                          else f"<td>{html.escape(c)}</td>" for i, c in enumerate(cells))
            body.append(f"<tr>{tds}</tr>")
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    params = "".join(f"<li><b>{html.escape(a)}</b>: <code>{html.escape(p)}</code></li>" for a, p in winners.items())
    cost = "".join(f"<li><b>{html.escape(a)}</b>: {html.escape(n)}</li>" for a, n in costs.items())
    images = "".join(f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' src='data:image/png;base64,"
                     f"{base64.b64encode((run_dir / file).read_bytes()).decode()}'>"
                     for name, file in (("Validation loss", PLOTS[0]), ("Learning rate", PLOTS[1])))
    replay_html = (f"<h2>PBT deployed schedules (replayable compare arms)</h2><pre>{html.escape(replay)}</pre>"
                   if replay else "")
    write_text(run_dir / "report.html",
        f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(about)}</p><h2>Ranking (eval phase)</h2>"
        f"<p>{html.escape(how)}</p>{table}{note}<h2>Cost</h2><ul>{cost}</ul><h2>Parameters</h2><ul>{params}</ul>"
        f"{images}{replay_html}</body></html>")
