"""One comparison trial: a batch of children under one arm, trained as one pool, reporting as it goes.

A trial's spec names one arm and its ``children`` (``{"params", "seed"}`` each: every grid
point x tune seed of a tuned arm in the tune phase, every held-out seed in the eval phase,
every held-out seed of one PBT member). The children train together through
:class:`lrservice.runner.ScheduledChildren` (batched when the model allows), so Tune
schedules a few heavy trials instead of many light ones.

:func:`run_trial` is the whole trial as a plain loop over a report callback, so it runs (and
is tested) without Ray; :func:`tune_trial` is the Tune function trainable around it
(``tune.report`` with checkpoints, ``tune.get_checkpoint`` on retry, resume or PBT exploit).
Every ``task.eval_every`` steps one report goes out: the step, the children's mean
validation loss (a diverged child counts +inf: PBT's metric and Tune's dashboards), and
``children``, a JSON list of each child's row (:mod:`lrservice.runner`; a child's last row
carries ``final`` and its test metrics), and where the batch trains (``pool``: batched or
separate, ``device``, and from Tune: ``node_id``, ``gpu_ids``). :func:`child_reports` turns a trial's reports back
into each child's own report sequence; each child is a result of its own in the tables,
``trial_id`` ``<tune trial id>.c<index>``. A trial's checkpoint holds all its children.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import ray
import torch
from ray import tune

from lrservice.child.trainer import cached_task_data
from lrservice.config import config_from_dict
from lrservice.kinds import get_kind
from lrservice.runner import ChildRun, ScheduledChildren
from lrservice.runtime import plan_placement

CHECKPOINT_FILE = "trial.pt"
_CONTROLLER_CACHE: dict = {}  # loaded controllers by checkpoint, once per worker process

Report = Callable[[dict, "Path | None"], None]


def child_id(trial_id: str, index: int) -> str:
    """A child's result id: its trial's id and its place in the trial."""
    return f"{trial_id}.c{index}"


def child_spec(spec: Mapping[str, Any], index: int) -> dict:
    """The spec of one child of a trial: the trial's spec with that child's ``params`` and ``seed``."""
    child = spec["children"][index]
    out = {k: v for k, v in spec.items() if k != "children"}
    return {**out, "params": child["params"], "seed": int(child["seed"]), "child": index}


def child_runs(spec: Mapping[str, Any]) -> list[ChildRun]:
    """The trial's children as runner inputs; a PBT member's ``lr`` (Tune's sample, top level) is a param."""
    extra = {"lr": spec["lr"]} if "lr" in spec else {}
    return [ChildRun(spec["kind"], {**c["params"], **extra}, int(c["seed"])) for c in spec["children"]]


def _task(spec: Mapping[str, Any]):
    return config_from_dict({"task": spec["task"]}).task


def _mean_loss(losses: np.ndarray) -> float:
    """The trial's metric: the children's mean validation loss, a non-finite one counting +inf."""
    return float(np.mean(np.where(np.isfinite(losses), losses, np.inf)))


def run_trial(spec: Mapping[str, Any], report: Report, restore_dir: Path | None = None) -> list[dict]:
    """Train the trial's children to ``task.steps`` (or divergence); returns each child's final row.

    ``report(metrics, checkpoint_dir)`` receives each report and, every
    ``spec["checkpoint_every"]`` steps and at the end, a directory holding the state of all
    the trial's children (valid only during the call). ``restore_dir`` continues from such a state.
    """
    task = _task(spec)
    runner = ScheduledChildren(task, child_runs(spec), data=cached_task_data(task), controllers=_CONTROLLER_CACHE)
    population = get_kind(spec["kind"]).population
    target = float(spec["target_accuracy"])
    me = spec.get("trial_id")
    lineage: dict = {"parent_trial_id": None, "parent_step": None}
    latest = np.full(runner.k, np.nan)  # each child's latest validation loss
    finals: dict[int, dict] = {}
    last: dict | None = None  # the last report (re-sent when restored from a finished state)
    last_checkpoint = 0
    if restore_dir is not None:
        state = torch.load(Path(restore_dir) / CHECKPOINT_FILE, weights_only=False)
        runner.load_state_dict(state["runner"])
        latest, finals, last = np.asarray(state["latest"], dtype=np.float64), dict(state["finals"]), state["last"]
        if population:  # an exploited member continues another's weights at its own new LR
            for i in range(runner.k):
                runner.set_lr(i, spec["lr"])
        last_checkpoint = runner.step
        lineage = dict(state.get("lineage", lineage))
        owner = state.get("owner")
        if owner is not None and me is not None and owner != me:  # PBT exploit: another member's checkpoint
            lineage = {"parent_trial_id": owner, "parent_step": runner.step}
    every = int(spec["checkpoint_every"])
    fail = spec.get("fail_once")

    def save(directory: Path) -> None:
        torch.save({"runner": runner.state_dict(), "latest": latest, "finals": finals, "last": last,
                    "owner": me, "lineage": lineage}, directory / CHECKPOINT_FILE)

    while not runner.done:
        at, rows = runner.advance(target)
        children = []
        for i, row in enumerate(rows):
            if row is None:
                continue
            latest[i] = row["val_loss"]
            row = {**row, "child": i, "seed": runner.runs[i].seed}
            if row["final"]:
                finals[i] = row
            children.append(row)
        last = {"step": at, "val_loss": _mean_loss(latest), "children_training": int((~runner.stopped).sum()),
                "children": json.dumps(children), "final": runner.done, "pool": runner.mode,
                "device": runner.device, **lineage}
        if runner.done:
            break
        if runner.step - last_checkpoint >= every:
            last_checkpoint = runner.step
            with tempfile.TemporaryDirectory(prefix="lrs-ckpt-") as tmp:
                save(Path(tmp))
                report(last, Path(tmp))
        else:
            report(last, None)
        if fail and runner.step >= fail["at_step"] and not os.path.exists(fail["marker"]):
            # fault injection for tests: {"at_step": n, "marker": path} fails once, after reporting step n
            Path(fail["marker"]).write_text(str(runner.step))
            raise RuntimeError(f"injected failure at step {runner.step} (fail_once)")
    if last is None:  # restored from a state saved before any report: nothing happened since
        last = {"step": runner.step, "val_loss": _mean_loss(latest), "children_training": 0, "children": "[]",
                "final": True, **lineage}
    last = {**last, "final": True, **lineage}  # restored from a finished trial's state (PBT can clone one) too
    with tempfile.TemporaryDirectory(prefix="lrs-ckpt-") as tmp:
        save(Path(tmp))
        report(last, Path(tmp))
    return [finals[i] for i in sorted(finals)]


def child_reports(reports: list[Mapping[str, Any]], trial_id: str | None = None) -> dict[int, list[dict]]:
    """Each child's own reports from its trial's reports, in order (restarts repeat some; later ones win
    downstream). A trial-level lineage (``parent_trial_id``) becomes the same child of the parent trial."""
    out: dict[int, list[dict]] = {}
    for report in reports:
        text = report.get("children")
        if not isinstance(text, str):
            continue
        parent = report.get("parent_trial_id")
        for row in json.loads(text):
            i = int(row["child"])
            lineage = {"parent_trial_id": child_id(parent, i) if isinstance(parent, str) and parent else None,
                       "parent_step": report.get("parent_step")}
            extra = {k: report[k] for k in ("time_total_s", "member", "config") if k in report}
            out.setdefault(i, []).append({**row, **lineage, **extra})
    return out


def child_share(reports: list[Mapping[str, Any]], children: int) -> float:
    """Each child's share of its trial's seconds: the trial's ``time_total_s`` over its ``children``
    (they trained as one pool, so none of them took the whole)."""
    return max((r.get("time_total_s") or 0) for r in reports) / children


def spec_from_config(config: Mapping[str, Any]) -> dict:
    """The trial spec inside a Tune config: ``{"spec": ...}`` plus, for PBT, top-level ``member`` and ``lr``."""
    return {**config["spec"], **{k: config[k] for k in ("member", "lr") if k in config}}


def tune_trial(config: dict) -> None:
    """The Tune function trainable: :func:`run_trial` reporting through ``tune.report``."""
    torch.set_num_threads(1)
    spec = {**spec_from_config(config), "trial_id": tune.get_context().get_trial_id()}  # owner of its checkpoints
    checkpoint = tune.get_checkpoint()
    where = {"node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": ",".join(map(str, ray.get_gpu_ids()))}

    def report(metrics: dict, directory: Path | None) -> None:
        clean = {k: (math.nan if v is None else v) for k, v in {**metrics, **where}.items()
                 if not (v is None and k.startswith("parent_"))}
        if directory is None:
            tune.report(clean)
        else:
            tune.report(clean, checkpoint=tune.Checkpoint.from_directory(str(directory)))

    if checkpoint is None:
        run_trial(spec, report)
    else:
        with checkpoint.as_directory() as directory:
            run_trial(spec, report, restore_dir=Path(directory))


def trial_trainable(resources, together: int | None = None):
    """:func:`tune_trial` with the per-trial request from :func:`lrservice.runtime.plan_placement`.

    ``together``: that many trials must run at once (a PBT population), so CPU and GPU
    requests are shrunk to a fair share of the cluster when it is too small for them.
    """
    placement = plan_placement(resources)
    request = dict(placement.trial)
    if together:
        cluster = ray.cluster_resources()
        for key, total in (("cpu", cluster.get("CPU", 0)), ("gpu", cluster.get("GPU", 0))):
            if request.get(key) and total and request[key] * together > total:
                request[key] = math.floor(100 * total / together) / 100
    return tune.with_resources(tune_trial, request), placement
