"""Several PPO runs of one recipe, one per training seed, and the pick (or ensemble) across them
(``controller.train_seeds``).

Which run of a recipe turns out well is itself a draw (docs/controller.md, "Checkpoint selection"):
on digits three training seeds of the default recipe gave picks that tie tuned cosine while the
shipped run beats it. So ``train-controller`` can train the recipe from several seeds and keep the
best pick, judged only on the selection seeds. Output directory layout (``output_dir``)::

    seed_<s>/          one ordinary train-controller output directory per training seed (checkpoints,
                       training_log.parquet, selection.parquet/json, last.pt, controller.pt: that run's pick)
    controller.pt      the best of the runs' picks (:func:`lrservice.control.selection.best_run`), with a
                       ``selection`` section that also names the training seed, every run's score and the
                       cost of all runs (a pick costs every run it was picked from); with
                       ``controller.across_runs: ensemble``, every run's pick acting together (one export
                       with a member per run, :func:`lrservice.control.checkpoint.ensemble_payload`)
    selection.parquet  every run's selection rows (``train_seed`` column); ``picked`` marks the one pick
    selection.json     every run's pick and the pick across runs

Why an ensemble: on digits the runs' picks differ by less than ten selection seeds can resolve, so
the pick across them is close to a coin toss; the mean of their action probabilities needs no such
choice. Measured on digits it is not reliably better than its runs either (better in one group of
three, worse in one; docs/controller.md, "An ensemble of runs"), so ``pick`` stays the default.

Runs train one after another in one Ray session; the first run's tuned cosine is handed to the
others (it does not depend on the training seed), so it is tuned once. ``--resume`` resumes
every run; a finished run is not trained again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Callable

import torch

from lrservice.config import RunConfig
from lrservice.control.checkpoint import EXPORT_FILE, ensemble_payload, load_export
from lrservice.control.selection import (
    REUSED_FROM,
    SELECTION_FILE,
    SELECTION_RECORD,
    best_run,
    read_selection,
    write_selection,
)
from lrservice.files import write_atomic, write_json

Log = Callable[[str], None]


def run_dir(out: Path, seed: int) -> Path:
    """Where the run of training seed ``seed`` writes."""
    return Path(out) / f"seed_{int(seed)}"


def run_config(config: RunConfig, seed: int) -> RunConfig:
    """The recipe as one run: ``task.seed`` is the training seed, no further runs."""
    return dataclasses.replace(config, task=dataclasses.replace(config.task, seed=int(seed)),
                               controller=dataclasses.replace(config.controller, train_seeds=()))


def train_runs(config: RunConfig, out: Path, iterations: int | None, resume: bool, log: Log) -> Path:
    """Train every run of ``controller.train_seeds`` into ``out/seed_<s>``, then export the best pick as
    ``out/controller.pt``; returns that path. Refuses (one line) to train over runs without ``resume``."""
    from lrservice.control.training import newest_to_resume, selection_settings, train_controller

    seeds = [int(s) for s in config.controller.train_seeds]
    for seed in seeds:  # every run is checked before the first one trains
        newest_to_resume(run_dir(out, seed), resume)
    out.mkdir(parents=True, exist_ok=True)
    cosine = None
    for i, seed in enumerate(seeds):
        log(f"[lrservice] controller run {i + 1}/{len(seeds)}: training seed {seed} -> {run_dir(out, seed)}")
        single = run_config(config, seed)
        record_path = run_dir(out, seed) / SELECTION_RECORD
        if cosine and not record_path.exists():  # tuned once: cosine does not depend on the training seed
            handed = {label: {**tuned, REUSED_FROM: seeds[0]} for label, tuned in cosine.items()}
            write_json(record_path, {"settings": selection_settings(single), "cosine": handed})
        train_controller(single, run_dir(out, seed), iterations=iterations, resume=resume, log=log)
        cosine = cosine or json.loads(record_path.read_text()).get("cosine")  # handing it on sets REUSED_FROM
    return publish_runs(config, out, log)


def publish_runs(config: RunConfig, out: Path, log: Log) -> Path:
    """``out/controller.pt``, ``selection.parquet`` and ``selection.json`` from the runs' own selections."""
    seeds = [int(s) for s in config.controller.train_seeds]
    records = {seed: json.loads((run_dir(out, seed) / SELECTION_RECORD).read_text()) for seed in seeds}
    picks = {seed: records[seed]["pick"] for seed in seeds}
    chosen = best_run({seed: float(p["score"]) for seed, p in picks.items()})
    rows = []
    for seed in seeds:
        for r in read_selection(run_dir(out, seed) / SELECTION_FILE):
            rows.append({**r, "train_seed": seed,
                         "picked": seed == chosen and r["iteration"] == picks[seed]["iteration"]})
    write_selection(rows, out / SELECTION_FILE)

    tuning = float(picks[seeds[0]]["tuning_child_steps"])  # tuned once, by the first run, handed to the others
    scoring = float(sum(p["scoring_child_steps"] for p in picks.values()))
    training = float(sum(p["run_child_steps"] for p in picks.values()))
    summary = {**picks[chosen], "train_seed": chosen, "train_seeds": seeds,
               "runs": {str(seed): {"iteration": p["iteration"], "score": p["score"]} for seed, p in picks.items()},
               "child_steps": tuning + scoring, "tuning_child_steps": tuning, "scoring_child_steps": scoring,
               "run_child_steps": training, "run_episodes": float(sum(p["run_episodes"] for p in picks.values())),
               "wall_s": float(sum(p["wall_s"] for p in picks.values()))}
    ensemble = config.controller.across_runs == "ensemble"
    if ensemble:  # no one checkpoint or score is the ensemble's: those stay in each member's own selection
        summary = {k: v for k, v in summary.items() if k not in ("iteration", "checkpoint", "score")}
        summary["across_runs"] = "ensemble"  # train_seed: the best-scoring run, whose log train_controller returns
    write_json(out / SELECTION_RECORD, {"runs": {str(seed): p for seed, p in picks.items()}, "pick": summary})
    if ensemble:  # every run's pick, acting together
        payload = ensemble_payload([load_export(run_dir(out, seed) / EXPORT_FILE) for seed in seeds], summary)
    else:
        payload = load_export(run_dir(out, chosen) / EXPORT_FILE)
        payload["selection"] = summary
    path = write_atomic(out / EXPORT_FILE, lambda tmp: torch.save(payload, tmp))
    share = summary["child_steps"] / training if training else math.nan
    scores = ", ".join(f"seed {seed} iter {p['iteration']} {float(p['score']):+.2%}" for seed, p in picks.items())
    made = (f"ensemble of all {len(seeds)} picks" if ensemble
            else f"pick: training seed {chosen}, iter {picks[chosen]['iteration']}")
    log(f"[lrservice] selection across {len(seeds)} runs: {scores}; {made} -> {path}; all runs cost "
        f"{training:,.0f} child steps, selection {summary['child_steps']:,.0f} ({share:.1%} of them)")
    return path


def _pick_across_runs(out: str | os.PathLike) -> dict:
    """The pick recorded by :func:`publish_runs` in ``out`` (empty: ``out`` is not a several-run directory)."""
    record = Path(out) / SELECTION_RECORD
    pick = (json.loads(record.read_text()).get("pick") or {}) if record.is_file() else {}
    return pick if "train_seed" in pick else {}


def chosen_run(out: str | os.PathLike) -> Path | None:
    """The run directory the pick of a several-run output directory came from (None: not one)."""
    pick = _pick_across_runs(out)
    return run_dir(Path(out), pick["train_seed"]) if pick else None


def run_dirs(out: str | os.PathLike) -> list[Path]:
    """Every run directory of a several-run output directory, in the order trained ([]: not one)."""
    return [run_dir(Path(out), seed) for seed in _pick_across_runs(out).get("train_seeds", ())]
