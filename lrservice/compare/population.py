"""A PBT arm: one population whose members each carry every held-out seed; its full history,
the deployed member per seed.

One Tuner with :class:`~ray.tune.schedulers.PopulationBasedTraining` (synchronous: all members
reach a perturbation step, then the bottom quantile continues the top's checkpoints at a
perturbed LR). A member is one Tune trial training one child per held-out seed at the
member's LR (a batched pool); PBT ranks members by their children's mean validation loss,
and an exploit copies the donor's children, every seed's, at exactly that step. So per seed
the members' children are a population of their own whose LR moves are decided on all seeds
together (docs/architecture.md argues this design): every member starts each seed from that
seed's weights and batch order, no child skips or repeats steps, and the deployed child of a
seed — the member with the best final validation loss *on that seed*, never the test split —
is one continuous run of that seed under a piecewise-constant LR.

Every result Tune receives is appended by a driver-side callback to
``parts/<name>.reports.jsonl`` as it arrives, so no member's history depends on Tune's own
per-trial files surviving exploits. From those reports come the children's rows (phase
``pbt``), the exploit log, and per seed the deployed child's lineage path and test metrics
as the arm's ``eval`` result for the seed.
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
from lrservice.compare.trainable import child_id, child_reports, child_share, child_spec, trial_trainable
from lrservice.config import ArmConfig, RunConfig

Log = Callable[[str], None]


def population_name(arm: ArmConfig) -> str:
    return f"eval-{arm.name}"


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
    """``(steps, trials, exploits)`` of the population: every member's children's rows (phase ``pbt``)
    plus, per seed, the deployed child's lineage path and summary (phase ``eval``)."""
    per_seed: dict[int, dict[str, list[dict]]] = {}
    for trial_id, rows in reports.items():
        for i, child_rows in child_reports(rows).items():
            per_seed.setdefault(i, {})[child_id(trial_id, i)] = child_rows
    k = len(spec["children"])
    tables = [_seed_tables(members, child_spec(spec, i), k) for i, members in sorted(per_seed.items())]
    if not tables:
        return pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    return tuple(pd.concat([t[j] for t in tables if len(t[j])] or [pd.DataFrame()], ignore_index=True)
                 for j in range(3))


def _seed_tables(reports: dict[str, list[dict]], spec: dict, k: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One seed's children of every member (each ``1/k`` of its member's seconds): their rows, the
    deployed child, the exploit log."""
    steps, trials = [], []
    for trial_id, rows in reports.items():
        rows = _until_first_final(rows)
        # an exploit copies the donor's config (its member index too): a member is who it started as
        member_spec = {**spec, "phase": "pbt", "member": rows[0].get("member"), "lr": rows[-1].get("lr")}
        share = child_share(rows, k)
        member_steps, summary = rows_from_reports(member_spec, trial_id, rows, share)
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


def run_population(arm: ArmConfig, config: RunConfig, run_id: str, run_dir: Path, resume: bool, log: Log) -> str:
    """Run (or skip, when its parts exist) the arm's population; returns the stage name."""
    name = population_name(arm)
    seeds = list(config.compare.seeds)
    spec = trial_spec(config, run_id, "eval", arm, [(arm.params, seed) for seed in seeds])
    p = spec["children"][0]["params"]
    spec["checkpoint_every"] = p["interval"]  # a checkpoint at every perturbation step
    reports = reports_path(run_dir, name)
    scheduler = tune.schedulers.PopulationBasedTraining(
        time_attr="step", metric="val_loss", mode="min", perturbation_interval=p["interval"],
        hyperparam_mutations={"lr": tune.loguniform(p["lr_min"], p["lr_max"])},
        quantile_fraction=0.25, resample_probability=0.25, synch=True)
    space = {"spec": spec, "member": tune.grid_search(list(range(p["population"]))),
             "lr": tune.loguniform(p["lr_min"], p["lr_max"])}
    population, _ = trial_trainable(config.resources, together=p["population"])  # the whole population at once
    label = lambda c: f"{arm.name}_m{c.get('member')}_{len(seeds)}seeds"
    outcome = lambda t: (f"done: {t.trial_id} {label(t.config)} mean val loss "
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
    log(f"[lrservice] phase eval: PBT arm {arm.name}: population {p['population']}, each member one child per "
        f"held-out seed ({len(seeds)}), LR in [{p['lr_min']:g}, {p['lr_max']:g}], perturb every {p['interval']} steps")
    grid = stage.fit(experiment, resume, log)
    for error in grid.errors:
        log(f"[lrservice] {name}: a member failed: {str(error).splitlines()[0][:200]}")
    steps, trials, log_rows = population_tables(read_reports(reports), spec)
    finished = int((trials["phase"] == "pbt").sum()) if len(trials) else 0
    expected = p["population"] * len(seeds)
    if finished + len(grid.errors) * len(seeds) < expected:  # Tune stopped early (Ctrl-C): not complete, resumable
        raise KeyboardInterrupt(f"{name}: {expected - finished} member children did not finish")
    stage.write_parts(experiment, [to_table(log_rows, EXPLOITS_SCHEMA), to_table(steps, STEPS_SCHEMA),
                                   to_table(trials, TRIALS_SCHEMA)])  # trials last: marks it complete
    deployed = trials[trials["phase"] == "eval"] if len(trials) else trials
    members = deployed["member"].astype(int).value_counts().sort_index() if len(deployed) else {}
    log(f"[lrservice] {name}: {p['population']} members x {len(seeds)} seeds, {len(log_rows)} exploits (per seed); "
        f"deployed per seed: " + ", ".join(f"member {m} on {n} seed(s)" for m, n in dict(members).items()))
    return name


def exploit_parts(run_dir: Path, names: list[str]) -> list[Path]:
    return [run_dir / "parts" / f"{n}.exploits.parquet" for n in names]

