"""Writes a controller evaluation: per-run and summary Parquet, a Markdown table, LR plots.

Files (``output_dir``): ``runs.parquet`` (one row per child run, with its LR trajectory),
``summary.parquet`` and ``summary.md`` (per arm and initial LR: mean ± std, paired
differences against tuned cosine, tuned constant and the best tuned rival with 95%
bootstrap CIs, and the child steps each arm cost), ``lr_trajectories.png``. Every file is
written atomically.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa

from lrservice.control.evaluate import Run
from lrservice.files import write_atomic, write_json, write_parquet, write_text


def _parquet(path: Path, rows: Sequence[Mapping]) -> None:
    write_parquet(pa.Table.from_pylist([dict(r) for r in rows]), path)


def _ci(row: Mapping, key: str, digits: int = 4) -> str:
    return f"{row[key]:+.{digits}f} [{row[key + '_low']:+.{digits}f}, {row[key + '_high']:+.{digits}f}]"


def markdown(rows: Sequence[Mapping], costs: Mapping[str, str], title: str, best: str) -> str:
    """The summary table: one line per arm and initial LR (``lr`` of a rival: its tuned peak LR)."""
    lines = [f"### {title}", "",
             "| arm | LR | final val loss | test acc | Δ val loss vs tuned cosine [95% CI] | verdict "
             "| Δ val loss vs tuned constant [95% CI] | verdict "
             f"| Δ val loss vs best tuned rival ({best}) [95% CI] | verdict | Δ test acc vs tuned cosine "
             "| child steps spent |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def vs(ref: str, name: str) -> str:  # an arm against itself is the reference, not "no difference"
            return "(reference) | " if r["arm"] == name else f"{_ci(r, f'dval_vs_{ref}')} | {r[f'verdict_vs_{ref}']}"
        lines.append(
            f"| {r['arm']} | {r['initial_lr']:g} | {r['val_loss_mean']:.4f} ± {r['val_loss_std']:.4f} "
            f"| {r['test_accuracy_mean']:.4f} ± {r['test_accuracy_std']:.4f} | {vs('cosine', 'cosine')} "
            f"| {vs('constant', 'constant')} | {vs('best', best)} "
            f"| {_ci(r, 'dacc_vs_cosine')} | {costs.get(r['arm'], '')} |")
    return "\n".join(lines) + "\n"


def plot_trajectories(path: Path, runs: Sequence[Run]) -> None:
    """Median LR per decision block of each controller and initial LR, beside the tuned baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    groups: dict[tuple[str, float], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.arm, r.initial_lr), []).append(r)
    for (arm, lr), rs in sorted(groups.items()):
        traj = np.nanmedian(np.asarray([r.lrs for r in rs], dtype=np.float64), axis=0)
        steps = np.arange(len(traj)) * rs[0].lr_every  # each arm's own spacing: controllers act every N steps
        style = "--" if rs[0].kind != "controller" else "-"
        label = f"tuned {arm} ({lr:g})" if style == "--" else f"{arm} from {lr:g}"
        ax.step(steps, traj, where="post", linestyle=style, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("child step")
    ax.set_ylabel("learning rate (median over held-out seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def write_evaluation(output_dir: str | Path, runs: Sequence[Run], rows: Sequence[Mapping], tuned: Mapping[str, Mapping],
                     best: str, costs: Mapping[str, str], title: str, meta: Mapping) -> Path:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _parquet(out / "runs.parquet", [{**dataclasses.asdict(r), "lrs": list(r.lrs)} for r in runs])
    _parquet(out / "summary.parquet", rows)
    tuned_line = "; ".join(f"{k} {json.dumps(dict(v), sort_keys=True)}" for k, v in tuned.items())
    write_text(out / "summary.md", markdown(rows, costs, title, best)
               + f"\nTuned on validation loss over the tune seeds: {tuned_line}. Best tuned rival there: {best}.\n")
    write_json(out / "evaluation.json", dict(meta))
    plot_trajectories(out / "lr_trajectories.png", runs)
    return out
