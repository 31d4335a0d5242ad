"""The Python API: every command as a function returning its run directory and tables.

    import lrservice
    result = lrservice.compare("configs/digits-mlp.yaml")          # or a dict, or a RunConfig
    result.summary                                                   # the ranked table (pandas)

The CLI (:mod:`lrservice.commands`) parses its arguments into these calls and prints what
they log, so both give the same checks, the same one-line errors (a :class:`ConfigError`
whose message starts with the field, raised before Ray starts) and the same files. ``log``
receives the progress lines (default ``print``). Ray, torch and pandas are imported inside
the functions, so ``import lrservice`` stays light.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import sys
import time
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence, Union

from lrservice.config import ConfigError, RunConfig, config_from_dict, load_config
from lrservice.preflight import check_recommend, check_tasks

if TYPE_CHECKING:
    import pandas as pd

Log = Callable[[str], None]
ConfigLike = Union[str, os.PathLike, Mapping[str, Any], RunConfig]
ControllersLike = Union[str, os.PathLike, Mapping[str, Union[str, os.PathLike]], Sequence[str]]

__all__ = ["CompareResult", "EvaluateControllerResult", "RecommendResult", "ReportResult", "TrainControllerResult",
           "compare", "evaluate_controller", "recommend", "report", "run_config", "train_controller"]


# -- results ---------------------------------------------------------------------------------
_result = dataclasses.dataclass(frozen=True, eq=False)  # frozen; no ==, which DataFrames cannot answer with one bool


@_result
class CompareResult:
    """A comparison: its run dir, ``steps.parquet``, ``trials.parquet`` and the ranked eval summary."""

    run_dir: Path
    trials: "pd.DataFrame"  # one row per trial (tune, eval, PBT member): final metrics, cost
    steps: "pd.DataFrame"  # one row per trial and report step: losses, accuracy, LR
    summary: "pd.DataFrame"  # per arm over held-out seeds, ranked; paired difference to the best tuned baseline
    exploits: "pd.DataFrame | None"  # PBT exploit log (pbt_exploits.parquet), None without a PBT arm
    report: Path | None  # report.md, None with compare.report false


@_result
class TrainControllerResult:
    """A controller training run: where it is, its exported controller and one log row per PPO iteration."""

    output_dir: Path
    checkpoint: Path  # the newest checkpoint directory (with controller.train_seeds: of the run picked from)
    export: Path  # controller.pt (the selection pick, or the newest): what from_checkpoint and a compare arm load
    training_log: "pd.DataFrame"  # with controller.train_seeds: the log of the run picked from


@_result
class EvaluateControllerResult:
    """The evidence protocol's output: every child run and the paired table against tuned baselines."""

    output_dir: Path
    runs: "pd.DataFrame"  # one row per child run (arm, initial LR, seed, metrics, LR trajectory)
    summary: "pd.DataFrame"  # per arm and initial LR: mean ± std, paired differences with 95% CIs, verdicts
    tuned: dict[str, dict]  # each rival's tuned params (constant, cosine, evaluate.rivals)
    best_rival: str  # the best tuned rival, picked on the tune seeds
    report: Path  # summary.md


@_result
class RecommendResult:
    """A recommendation: the ranked verified candidates, the winner, FIX and the verdict."""

    run_dir: Path
    candidates: "pd.DataFrame"  # one row per verified candidate, ranked
    runs: "pd.DataFrame"  # one row per child run of every stage
    steps: "pd.DataFrame"  # every report of every run
    best: dict  # the winning candidate's row
    verdict: str
    recommended: Path  # recommended.yaml: the winner as a compare arm
    snippet: str  # its text


@_result
class ReportResult:
    """A comparison's report, rebuilt from its Parquet files."""

    run_dir: Path
    report: Path  # report.md (report.html and the plots beside it)
    summary: "pd.DataFrame"
    tensorboard: Path  # one TensorBoard run per arm and seed


# -- configs -----------------------------------------------------------------------------------
def run_config(config: ConfigLike) -> RunConfig:
    """A validated :class:`RunConfig` from a YAML/JSON path, a dict of sections or a RunConfig."""
    if isinstance(config, RunConfig):
        return config.validate()
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    if isinstance(config, Mapping):
        return config_from_dict(config)
    raise ConfigError(f"config: {config!r} is not allowed; give a YAML/JSON path, a dict of sections or a RunConfig")


def _checked(config: ConfigLike, log: Log) -> RunConfig:
    """:func:`run_config`, then a plugin task's contract (``preflight.check_tasks``), before any work."""
    config = run_config(config)
    check_tasks(config, log)
    return config


def _check_resume(resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite: choose one")


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Children are small: one torch thread, as every shipped number was measured (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _table(path: Path) -> "pd.DataFrame":
    import pandas as pd

    return pd.read_parquet(path)


# -- commands ----------------------------------------------------------------------------------
def compare(config: ConfigLike, resume: bool = False, overwrite: bool = False, log: Log = print) -> CompareResult:
    """Compare the config's arms with Ray Tune (tune phase, eval phase, PBT) and write the run dir.

    ``resume`` continues an interrupted run in ``compare.output_dir/compare.name``; ``overwrite``
    deletes it first. Every check the config allows runs before Ray starts (docs/compare.md).
    """
    _check_resume(resume, overwrite)
    config = _checked(config, log)
    from lrservice.compare.arms import check_compare

    check_compare(config)  # everything the config file can tell, before Ray starts (or is imported)
    from lrservice.compare.experiment import run_compare  # Ray and torch
    from lrservice.compare.report import load_run, run_summary
    from lrservice.compare.results import EXPLOITS_FILE

    run_dir = run_compare(config, resume=resume, overwrite=overwrite, log=log, checked=True)
    steps, trials = load_run(run_dir)
    exploits = run_dir / EXPLOITS_FILE
    return CompareResult(run_dir, trials, steps, run_summary(run_dir, trials),
                         _table(exploits) if exploits.exists() else None,
                         run_dir / "report.md" if config.compare.report else None)


def train_controller(config: ConfigLike, iterations: int | None = None, resume: bool = False,
                     output_dir: str | os.PathLike | None = None, log: Log = print) -> TrainControllerResult:
    """Train the learned controller with RLlib PPO; ``iterations`` in total (default ``controller.iterations``).

    Writes checkpoints, ``controller.pt`` and ``training_log.parquet`` to ``output_dir`` (default
    ``controller.checkpoint_dir``); ``resume`` continues from its newest checkpoint.
    """
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1):
        raise ConfigError(f"--iterations: {iterations!r} is not allowed; it must be an integer >= 1")
    config = _checked(config, log)
    out = Path(os.path.expanduser(output_dir or config.controller.checkpoint_dir))
    with _one_torch_thread():
        from lrservice.control.checkpoint import latest_checkpoint
        from lrservice.control.runs import chosen_run
        from lrservice.control.training import LOG_FILE
        from lrservice.control.training import train_controller as train

        export = Path(train(config, out, iterations=iterations, resume=resume, log=log))  # controller.pt: the pick
        run = chosen_run(out) if config.controller.train_seeds else out  # several runs: the one picked from
    log(f"[lrservice] controller checkpoint: {export}")
    return TrainControllerResult(out.resolve(), Path(latest_checkpoint(run)).resolve(), export.resolve(),
                                 _table(run / LOG_FILE))


def controller_paths(controllers: ControllersLike, taken: Sequence[str] = ()) -> dict[str, str]:
    """``{name: checkpoint}`` from a mapping, one path (named ``controller``) or ``[NAME=]PATH`` strings.

    Names are letters, digits, ``-`` and ``_``, each used once and none of ``taken`` (the baselines').
    """
    if isinstance(controllers, (str, os.PathLike)):
        controllers = [os.fspath(controllers)]
    if isinstance(controllers, Mapping):
        pairs = [(str(name), os.fspath(path)) for name, path in controllers.items()]
    else:
        specs = list(controllers)
        pairs = []
        for i, spec in enumerate(specs):
            name, sep, path = str(spec).partition("=")
            if not sep:
                name, path = ("controller" if len(specs) == 1 else f"controller{i + 1}"), str(spec)
            pairs.append((name, path))
    if not pairs:
        raise ConfigError("--controller: give at least one controller (pretrained:NAME, a controller.pt or a "
                          "checkpoint directory)")
    named: dict[str, str] = {}
    for name, path in pairs:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"--controller: {name!r} is not a usable name; use letters, digits, '-' and '_'")
        if name in named or name in taken:
            raise ConfigError(f"--controller: the name {name!r} is taken; give each controller its own NAME=")
        named[name] = path
    return named


def evaluate_controller(config: ConfigLike, controllers: ControllersLike, seeds: Sequence[int] | None = None,
                        output_dir: str | os.PathLike | None = None, log: Log = print) -> EvaluateControllerResult:
    """The evidence protocol (no Ray): tune constant, cosine and the rivals; run them and each controller on
    held-out seeds.

    ``controllers`` maps names to ``pretrained:NAME``, a ``controller.pt`` or a checkpoint / output
    directory; ``seeds`` replaces ``evaluate.seeds`` (checked like seeds from the file);
    ``output_dir`` defaults to ``evaluate.output_dir``. Returns the runs and the paired table.
    """
    config = _checked(config, log)
    if seeds is not None:
        config = config.replace(evaluate={"seeds": [int(s) for s in seeds]})  # refused before torch loads
    from lrservice.control.rivals import check_rivals, rivals

    check_rivals(config)  # bad input is refused before torch loads
    field = rivals(config)
    from lrservice.control.evaluate import REFERENCES

    names = controller_paths(controllers, (*REFERENCES, *(r.name for r in field)))
    with _one_torch_thread():
        from lrservice.child.pool import pool_mode
        from lrservice.child.trainer import load_task_data
        from lrservice.control.checkpoint import resolve_checkpoint
        from lrservice.control.controller import LearnedController
        from lrservice.control.evaluate import evaluate_controllers
        from lrservice.control.evidence import write_evaluation

        paths = {name: resolve_checkpoint(path) for name, path in names.items()}  # before any work
        ev, task = config.evaluate, config.task
        loaded = {name: LearnedController.from_checkpoint(p) for name, p in paths.items()}
        initial_lrs = ev.initial_lrs or config.controller.initial_lrs
        started = time.perf_counter()
        data = load_task_data(task)
        log(f"[lrservice] evaluate: {task.dataset}/{task.model}, {task.steps} steps; tune seeds {list(ev.tune_seeds)}, "
            f"held-out seeds {list(ev.seeds)}")
        log(f"[lrservice] children: {pool_mode(task, data)}")
        runs, rows, tuned, best = evaluate_controllers(task, data, loaded, field, ev.tune_seeds, ev.seeds,
                                                       initial_lrs, log=log)
        tuning = {r.name: len(r.points) * len(ev.tune_seeds) * task.steps for r in field}
        costs = {name: f"{steps:,} tuning + {task.steps}/seed" for name, steps in tuning.items()}
        for name, ctrl in loaded.items():
            picked = ctrl.payload.get("selection") or {}  # a pick: the whole run it came from, plus the selection
            spent = max(float(ctrl.payload.get("training", {}).get("child_steps", 0) or 0),
                        float(picked.get("run_child_steps") or 0))
            selecting = f" + {float(picked['child_steps']):,.0f} selection" if picked else ""
            costs[name] = f"{spent:,.0f} training{selecting} (pretrained, reused) + {task.steps}/seed"
        out = write_evaluation(output_dir or ev.output_dir, runs, rows, tuned, best, costs,
                               f"{task.dataset}/{task.model}, {task.steps} steps, {len(ev.seeds)} held-out seeds",
                               {"task": config.to_dict()["task"], "evaluate": config.to_dict()["evaluate"],
                                "controllers": {k: str(v) for k, v in paths.items()}, "tuned": tuned,
                                "best_rival": best,
                                "tuning_child_steps": sum(tuning.values()), "wall_s": time.perf_counter() - started})
    log((out / "summary.md").read_text())
    log(f"[lrservice] evaluation written to {out} ({time.perf_counter() - started:.0f} s)")
    return EvaluateControllerResult(out.resolve(), _table(out / "runs.parquet"), _table(out / "summary.parquet"),
                                    dict(tuned), best, (out / "summary.md").resolve())


def recommend(config: ConfigLike, target_accuracy: float | None = None, budget: int | None = None,
              num_samples: int | None = None, resume: bool = False, overwrite: bool = False,
              log: Log = print) -> RecommendResult:
    """Search the LRBench zoo (ASHA), compose, verify on fresh seeds and rank against FIX.

    ``target_accuracy``, ``budget`` and ``num_samples`` replace the ``recommend`` section's
    fields; files go to ``recommend.output_dir/recommend.name`` (docs/recommend.md).
    """
    _check_resume(resume, overwrite)
    config = _checked(config, log)
    overrides = {k: v for k, v in (("target_accuracy", target_accuracy), ("budget", budget),
                                   ("num_samples", num_samples)) if v is not None}
    if overrides:
        config = config.replace(recommend=overrides)
    check_recommend(config)
    from lrservice.recommend.search import run_recommend  # Ray and torch

    result = run_recommend(config, resume=resume, overwrite=overwrite, log=log)
    run_dir = result.run_dir
    return RecommendResult(run_dir, _table(run_dir / "candidates.parquet").sort_values("rank", ignore_index=True),
                           _table(run_dir / "runs.parquet"), _table(run_dir / "steps.parquet"), dict(result.best),
                           result.verdict, run_dir / "recommended.yaml", result.snippet)


def report(run_dir: str | os.PathLike, log: Log = print) -> ReportResult:
    """Rebuild a comparison's ranked table, plots, report.md/html and TensorBoard runs from its Parquet files."""
    from lrservice.compare.report import build_report, load_run, run_summary  # pandas, matplotlib
    from lrservice.compare.tensorboard import write_tensorboard

    run_dir = Path(run_dir)
    steps, trials = load_run(run_dir)
    board = write_tensorboard(steps, run_dir)
    log(f"[lrservice] TensorBoard: tensorboard --logdir {board}")
    path = build_report(run_dir, log=log, echo=True)
    return ReportResult(run_dir.resolve(), Path(path), run_summary(run_dir, trials), Path(board))


# -- lrservice.compare(...) and lrservice.recommend(...) ---------------------------------------------
COMMAND_PACKAGES = {"lrservice.compare": compare, "lrservice.recommend": recommend}


class CommandPackage(types.ModuleType):
    """A subpackage that is also its command: ``lrservice.compare(config)`` is :func:`compare`.

    Python binds an imported subpackage as an attribute of its parent, so ``lrservice.compare``
    is the package ``lrservice/compare/`` once anything in it is imported; calling it runs the
    command, so the API's names and the package's names do not fight.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return COMMAND_PACKAGES[self.__name__](*args, **kwargs)


def make_command_package(name: str, exports: Mapping[str, str]) -> None:
    """Turn the already imported package ``name`` (a key of :data:`COMMAND_PACKAGES`) into a :class:`CommandPackage`
    whose names in ``exports`` (name -> submodule) load on first use (PEP 562), keeping its import light."""
    module = sys.modules[name]

    def __getattr__(attr: str) -> Any:
        if attr in exports:
            return getattr(importlib.import_module(f"{name}.{exports[attr]}"), attr)
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    module.__getattr__, module.__all__ = __getattr__, sorted(exports)
    module.__class__ = CommandPackage
