"""A Tune stage: one experiment of a resumable run, shared by ``compare`` and ``recommend``.

A run lives in one dir::

    config.json                  the run's config and run_id (checked on --resume)
    <stage>/                     the stage's Tune experiment dir
    parts/<stage>.<kind>.parquet the stage's tables; the last kind written marks it complete

On ``--resume`` a complete stage is skipped. An interrupted one is restored with
``Tuner.restore(..., resume_errored=True)`` only when Tune saved an experiment-state
snapshot; a driver killed before the first snapshot leaves ``tuner.pkl`` alone, and that
stage starts again from scratch. Progress lines go through the ``log`` callback.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from ray import tune
from ray.tune import Callback
from ray.tune.search.basic_variant import BasicVariantGenerator

from lrservice.config import ConfigError, RunConfig
from lrservice.files import read_json_lines, write_json, write_parquet

Log = Callable[[str], None]
CONFIG_FILE = "config.json"
PARTS = "parts"


def prepare_run_dir(run_dir: Path, config: RunConfig, section: str, resume: bool, overwrite: bool, log: Log) -> str:
    """Create ``run_dir`` (or, on resume, check it holds the same ``task`` and ``section``); returns the run id.

    A dir that already has results is refused unless ``resume`` (continue it) or
    ``overwrite`` (delete it first).
    """
    meta_path = run_dir / CONFIG_FILE
    name = f"{section}.name"
    if overwrite and run_dir.exists():
        log(f"[lrservice] --overwrite: removing {run_dir}")
        shutil.rmtree(run_dir)
    plain = config.to_dict()
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if not resume:
            raise ConfigError(f"{name}: {getattr(config, section).name!r} already has results in {run_dir}; rerun "
                              f"with --resume to continue it, --overwrite to start again, or choose another {name}")
        if any(meta["config"].get(key) != plain[key] for key in ("task", section)):
            raise ConfigError(f"{name}: {run_dir} was started with a different task/{section} config; "
                              f"--resume needs the same config (use another {name} or --overwrite)")
        run_id = meta.get("run_id") or run_dir.name
        log(f"[lrservice] resuming run {run_id} in {run_dir}")
        return run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"{getattr(config, section).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    write_json(meta_path, {"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "config": plain})
    log(f"[lrservice] run {run_id} in {run_dir}")
    return run_id


@dataclass(frozen=True)
class Stage:
    """One Tune experiment of a run: where it lives, what runs, and how its trials are named.

    ``label`` turns a trial's config into a short name (trial dirs and progress lines);
    ``outcome`` turns a finished Tune trial into the rest of its progress line. ``parts``
    are the kinds of table the stage writes; the last one written marks it complete.
    """

    name: str
    run_dir: Path
    trainable: Any
    param_space: dict
    label: Callable[[Mapping[str, Any]], str]
    outcome: Callable[[Any], str]
    parts: tuple[str, ...]
    total: int
    max_failures: int = 1
    scheduler: Any = None
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    callbacks: tuple = ()  # more Tune callbacks (PBT: the driver-side recorder of every result)

    @property
    def path(self) -> Path:
        """The stage's Tune experiment dir."""
        return self.run_dir / self.name

    def part(self, kind: str) -> Path:
        """Where the stage's ``kind`` table goes: ``parts/<stage>.<kind>.parquet``."""
        return part_path(self.run_dir, self.name, kind)

    @property
    def complete(self) -> bool:
        """All the stage's tables are written (the last one only after the others)."""
        return all(self.part(kind).exists() for kind in self.parts)


def part_path(run_dir: Path, stage: str, kind: str) -> Path:
    return run_dir / PARTS / f"{stage}.{kind}.parquet"


def restorable(path: Path) -> bool:
    """Tune can continue ``path`` only once it has written a whole state snapshot.

    A driver killed before the first snapshot leaves ``tuner.pkl`` alone, which Tune would
    "restore" into a fresh experiment without its trial configs. A snapshot is the
    experiment state and then the searcher's state (Tune writes them in that order); killed
    between the two, a restore keeps the trials but starts the grid search over, so every
    trial would run twice. Both files must be there.
    """
    searcher_state = BasicVariantGenerator.CKPT_FILE_TMPL.format("*")  # the stages' searcher: Tune's default
    return (path.exists() and tune.Tuner.can_restore(str(path))
            and any(path.glob("experiment_state-*.json")) and any(path.glob(searcher_state)))


def tuner(stage: Stage, resume: bool, log: Log) -> tune.Tuner:
    """A new Tuner for ``stage``, or the restored one when resuming an interrupted experiment."""
    path = stage.path
    if resume and restorable(path):
        log(f"[lrservice] {stage.name}: restoring the interrupted experiment from {path}")
        return tune.Tuner.restore(str(path), trainable=stage.trainable, param_space=stage.param_space,
                                  resume_errored=True)
    if path.exists():
        if resume:
            log(f"[lrservice] {stage.name}: the interrupted experiment saved no state yet; starting it again")
        shutil.rmtree(path)  # started but never saved its state: nothing to restore
    name = lambda trial: f"{stage.label(trial.config)}_{trial.trial_id}"
    return tune.Tuner(
        stage.trainable,
        param_space=stage.param_space,
        tune_config=tune.TuneConfig(
            num_samples=stage.num_samples,
            scheduler=stage.scheduler,
            max_concurrent_trials=stage.max_concurrent_trials,
            reuse_actors=True,
            trial_name_creator=name,
            trial_dirname_creator=name,
        ),
        run_config=tune.RunConfig(
            name=stage.name,
            storage_path=str(stage.run_dir),
            failure_config=tune.FailureConfig(max_failures=stage.max_failures),
            # keep all: PBT breaks with num_to_keep (DESIGN.md), and pruning forces state snapshots;
            # a trainable's checkpoint period bounds disk use
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            callbacks=[Progress(stage.name, stage.total, stage.max_failures, stage.label, stage.outcome, log),
                       *stage.callbacks],
            verbose=int(os.environ.get("LRSERVICE_TUNE_VERBOSE", "0")),  # Tune's tables: 1; our lines suffice
        ),
    )


class Progress(Callback):
    """One ``[lrservice]`` line through ``log`` per finished, retried or failed trial."""

    def __init__(self, name: str, total: int, max_failures: int, label: Callable, outcome: Callable, log: Log):
        self.name, self.total, self.max_failures = name, total, max_failures
        self.label, self.outcome, self.log = label, outcome, log
        self.done = 0

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks into the experiment state; the caller's ``log`` need not pickle (a bound
        method, a closure, or ``print`` once Ray has replaced ``builtins.print``), so it is left out and a
        restored copy prints."""
        return {**self.__dict__, "log": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, log=state.get("log") or _print)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        self.log(f"[lrservice] {self.name}: {self.done}/{self.total} {self.outcome(trial)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.log(f"[lrservice] {self.name}: trial {trial.trial_id} {self.label(trial.config)} was lost (failure "
                 f"{trial.num_failures} of {self.max_failures} allowed, e.g. its node died); "
                 "retrying it from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.log(f"[lrservice] {self.name}: trial {trial.trial_id} {self.label(trial.config)} failed for good "
                 f"(after {self.max_failures} retries); see {trial.local_path}")


def _print(line: str) -> None:
    print(line, flush=True)


def trial_reports(grid) -> list[tuple[Path, list[dict]]]:
    """Each trial's dir and every report in its ``result.json`` (restarts included), in grid order."""
    return [(Path(result.path), read_json_lines(Path(result.path) / "result.json")) for result in grid]


def fit(stage: Stage, resume: bool, log: Log):
    """Run (or continue) the stage's experiment; returns Tune's ``ResultGrid``."""
    return tuner(stage, resume, log).fit()


def write_parts(stage: Stage, tables: Sequence[pa.Table]) -> None:
    """The stage's tables in ``stage.parts`` order; the last one marks the stage complete."""
    for kind, table in zip(stage.parts, tables, strict=True):
        write_parquet(table, stage.part(kind))


def grid_size(space: Mapping[str, Any]) -> int:
    """How many trials a param space's ``grid_search`` values make (per sample)."""
    n = 1
    for value in space.values():
        if isinstance(value, dict) and "grid_search" in value:
            n *= len(value["grid_search"])
    return n
