"""A PBT arm on one held-out seed: one independent population, its full history, its deployed member.

Each held-out seed gets its own Tuner with :class:`~ray.tune.schedulers.PopulationBasedTraining`
(synchronous: all members reach a perturbation step, then the bottom quantile continues the
top's checkpoints at a perturbed LR). All members start from the seed's weights and batch
order; a checkpoint is saved at every perturbation step, so an exploit continues the donor at
exactly that step and no member skips or repeats steps.

Every result Tune receives is appended by a driver-side callback to
``parts/<name>.reports.jsonl`` as it arrives, so no member's history depends on Tune's own
per-trial files surviving exploits. From those reports come the members' rows (phase
``pbt``), the exploit log, and the deployed member — best final validation loss, never the
test split — whose lineage path and test metrics are the arm's ``eval`` result for the seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd
from ray import tune
from ray.tune import Callback

from lrservice import stage
from lrservice.compare.arms import trial_spec
from lrservice.compare.pbt import deployed_member, deployed_path, exploits
from lrservice.compare.results import EXPLOITS_SCHEMA, STEPS_SCHEMA, TRIALS_SCHEMA, rows_from_reports, to_table
from lrservice.compare.trainable import trial_trainable
from lrservice.config import ArmConfig, RunConfig

Log = Callable[[str], None]


def population_name(arm: ArmConfig, seed: int) -> str:
    return f"eval-{arm.name}-s{seed}"


def reports_path(run_dir: Path, name: str) -> Path:
    return run_dir / "parts" / f"{name}.reports.jsonl"


def recorder(path: Path, with_config: bool = False):
    """A Tune callback appending every trial result to ``path`` as JSON lines, as the driver
    receives it (``with_config``: the trial's config too; else only the PBT ``member``)."""
    class Recorder(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            row = {k: v for k, v in result.items() if k != "config"}
            row["trial_id"] = trial.trial_id
            row["member"] = trial.config.get("member")
            if with_config:
                row["config"] = trial.config
            with open(path, "a") as f:
                f.write(json.dumps(row, default=str) + "\n")
                f.flush()

    return Recorder()


def read_reports(path: Path) -> dict[str, list[dict]]:
    """Reports per trial id in arrival order (a line cut by a crash is skipped)."""
    out: dict[str, list[dict]] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.setdefault(str(row["trial_id"]), []).append(row)
    return out


def population_tables(reports: dict[str, list[dict]], spec: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(steps, trials, exploits)`` of one population: member rows (phase ``pbt``) plus the
    deployed member's lineage path and summary (phase ``eval``)."""
    steps, trials = [], []
    for trial_id, rows in reports.items():
        rows = _until_first_final(rows)
        # an exploit copies the donor's config (its member index too): a member is who it started as
        member_spec = {**spec, "phase": "pbt", "member": rows[0].get("member"), "lr": rows[-1].get("lr")}
        wall = max((r.get("time_total_s") or 0) for r in rows)
        member_steps, summary = rows_from_reports(member_spec, trial_id, rows, wall)
        steps.extend(member_steps)
        if summary is not None:
            trials.append(summary)
    steps_df, trials_df = pd.DataFrame(steps), pd.DataFrame(trials)
    if trials_df.empty:
        return steps_df, trials_df, pd.DataFrame()
    best = deployed_member(trials_df)
    path = deployed_path(steps_df, best["trial_id"]).assign(phase="eval", trial_id=best["trial_id"])
    deployed = pd.DataFrame([{**best, "phase": "eval"}])
    return (pd.concat([steps_df, path], ignore_index=True), pd.concat([trials_df, deployed], ignore_index=True),
            exploits(steps_df))


def _until_first_final(rows: list[dict]) -> list[dict]:
    """A member's reports up to its own final one. PBT may still "exploit" a member at the last
    step, restarting it from a finished donor that only re-reports the donor's end: a clone,
    not training, so it is not part of the member's history."""
    for i, row in enumerate(rows):
        if row.get("final") is True or str(row.get("final")).lower() == "true":
            return rows[: i + 1]
    return rows


def run_population(arm: ArmConfig, seed: int, config: RunConfig, run_id: str, run_dir: Path, resume: bool,
                   log: Log) -> str:
    """Run (or skip, when its parts exist) one seed's population; returns the stage name."""
    name = population_name(arm, seed)
    spec = trial_spec(config, run_id, "eval", arm, arm.params, seed)
    p = spec["params"]
    spec["checkpoint_every"] = p["interval"]  # a checkpoint at every perturbation step
    reports = reports_path(run_dir, name)
    scheduler = tune.schedulers.PopulationBasedTraining(
        time_attr="step", metric="val_loss", mode="min", perturbation_interval=p["interval"],
        hyperparam_mutations={"lr": tune.loguniform(p["lr_min"], p["lr_max"])},
        quantile_fraction=0.25, resample_probability=0.25, synch=True)
    space = {"spec": spec, "seed": seed, "member": tune.grid_search(list(range(p["population"]))),
             "lr": tune.loguniform(p["lr_min"], p["lr_max"])}
    population, _ = trial_trainable(config.resources, together=p["population"])  # the whole population at once
    label = lambda c: f"{arm.name}_s{seed}_m{c.get('member')}"
    outcome = lambda t: (f"done: {t.trial_id} {label(t.config)} val loss "
                         f"{(t.last_result or {}).get('val_loss', float('nan')):.4f}")
    experiment = stage.Stage(
        name=name, run_dir=run_dir, trainable=population, param_space=space, label=label, outcome=outcome,
        parts=("exploits", "steps", "trials"), total=p["population"], max_failures=config.compare.max_failures,
        scheduler=scheduler, callbacks=(recorder(reports),))
    if experiment.complete:
        log(f"[lrservice] {name}: already complete ({experiment.part('trials').name}); skipping")
        return name
    reports.parent.mkdir(parents=True, exist_ok=True)
    if not (resume and stage.restorable(experiment.path)) and reports.exists():
        reports.unlink()  # a fresh start: the old reports belong to a run that saved no state
    log(f"[lrservice] phase eval: PBT arm {arm.name}, seed {seed}: population {p['population']}, "
        f"LR in [{p['lr_min']:g}, {p['lr_max']:g}], perturb every {p['interval']} steps")
    grid = stage.fit(experiment, resume, log)
    for error in grid.errors:
        log(f"[lrservice] {name}: a member failed: {str(error).splitlines()[0][:200]}")
    steps, trials, log_rows = population_tables(read_reports(reports), spec)
    finished = int((trials["phase"] == "pbt").sum()) if len(trials) else 0
    if finished + len(grid.errors) < p["population"]:  # Tune stopped early (Ctrl-C): not complete, resumable
        raise KeyboardInterrupt(f"{name}: {p['population'] - finished} member(s) did not finish")
    stage.write_parts(experiment, [to_table(log_rows, EXPLOITS_SCHEMA), to_table(steps, STEPS_SCHEMA),
                                   to_table(trials, TRIALS_SCHEMA)])  # trials last: marks it complete
    members = trials[trials["phase"] == "pbt"] if len(trials) else trials
    deployed = trials[trials["phase"] == "eval"] if len(trials) else trials
    if len(deployed):
        d = deployed.iloc[0]
        log(f"[lrservice] {name}: {len(members)} members, {len(log_rows)} exploits; deploys member {int(d['member'])} "
            f"(val loss {d['final_val_loss']:.4f}, test acc {d['test_accuracy']:.4f})")
    return name


def exploit_parts(run_dir: Path, names: list[str]) -> list[Path]:
    return [run_dir / "parts" / f"{n}.exploits.parquet" for n in names]

