"""One comparison trial: train a child with one arm's LR schedule and report as it goes.

:func:`run_trial` is the whole trial as a plain loop over a report callback, so it runs
(and is tested) without Ray; :func:`tune_trial` is the Tune function trainable around
it (``tune.report`` with checkpoints, ``tune.get_checkpoint`` on retry, resume or PBT
exploit). Every ``task.eval_every`` steps a row goes out: mean train loss since the
last row, validation loss and accuracy (the whole validation split), the LR used by the
last step, elapsed training seconds and the step. The last report carries
``final=True`` plus test metrics and LRBench's utility / cost / robustness numbers.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import ray
import torch
from ray import tune

from lrservice.child.trainer import ChildTrainer, cached_task_data
from lrservice.config import config_from_dict
from lrservice.kinds import get_kind
from lrservice.recommend.metrics import cost, loss_gap, utility
from lrservice.runtime import plan_placement

CHECKPOINT_FILE = "trial.pt"
_CONTROLLER_CACHE: dict = {}

Report = Callable[[dict, "Path | None"], None]


class LRDriver:
    """Sets the child's LR as its arm's kind says and remembers the LR the last step used.

    The kind's torch scheduler (if any) is stepped after every step; a learned controller
    (``kind.controller``) sets the next LR every ``action_every`` steps; otherwise the LR the
    optimizer was built with stays (PBT changes it between checkpoints).
    """

    def __init__(self, spec: Mapping[str, Any], trainer):
        self.kind = get_kind(spec["kind"])
        self.trainer = trainer
        self.action_every = 0
        params = trial_params(spec)
        self.scheduler = self.kind.scheduler(trainer.optimizer, params)
        self.controller = _controller(self.kind, params)
        if self.controller is not None:
            getattr(self.controller, "reset", lambda: None)()  # cached per worker: forget the last trial
            self.action_every = int(self.controller.action_every)
        self.last_lr = trainer.lr

    def after_step(self, step: int, loss: float) -> None:
        self.last_lr = self.kind.reported_lr(self.trainer.optimizer)
        if self.scheduler is not None:
            self.scheduler.step()

    def next_boundary(self, step: int, report_at: int) -> int:
        """The next step at which training must pause: a report or a controller action."""
        if self.action_every:
            return min(report_at, (step // self.action_every + 1) * self.action_every)
        return report_at

    def act(self) -> None:
        """At a controller action step (0, N, 2N, ... before the last): observe the child and set its next LR."""
        step = self.trainer.step
        if self.action_every and step % self.action_every == 0 and step < self.trainer.task.steps:
            features, _ = self.trainer.observe()
            progress = self.trainer.step / self.trainer.task.steps
            self.trainer.lr = float(self.controller.next_lr(features, self.trainer.lr, progress))

    def state_dict(self) -> dict:
        return {"scheduler": None if self.scheduler is None else self.scheduler.state_dict(), "last_lr": self.last_lr,
                "level": getattr(self.controller, "level", None)}  # a controller's level under an envelope

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.controller is not None and state.get("level") is not None:
            self.controller.level = state["level"]
        self.last_lr = state["last_lr"]


def _task(spec: Mapping[str, Any]):
    return config_from_dict({"task": spec["task"]}).task


def _data(task):
    """The task's tensors, loaded once per worker process (Tune reuses trial actors)."""
    return cached_task_data(task)


def _controller(kind, params: Mapping[str, Any]):
    """The arm's learned controller (None for other kinds), loaded once per worker process."""
    checkpoint = params.get("checkpoint") if kind.learned else None
    if checkpoint is None:
        return None
    if checkpoint not in _CONTROLLER_CACHE:
        _CONTROLLER_CACHE[checkpoint] = kind.controller(params)
    return _CONTROLLER_CACHE[checkpoint]


def trial_params(spec: Mapping[str, Any]) -> dict:
    """The trial's params; a PBT member's ``lr`` (Tune's sample, top level in the spec) is one of them."""
    return {**spec["params"], **({"lr": spec["lr"]} if "lr" in spec else {})}


def initial_lr(spec: Mapping[str, Any]) -> float:
    """The LR the child's optimizer is built with: the kind's LR at step 0."""
    return get_kind(spec["kind"]).initial_lr(trial_params(spec))


def run_trial(spec: Mapping[str, Any], report: Report, restore_dir: Path | None = None) -> dict:
    """Train one child under ``spec`` to ``task.steps`` (or divergence); returns the final metrics.

    ``report(metrics, checkpoint_dir)`` receives each row and, every
    ``spec["checkpoint_every"]`` steps and at the end, a directory holding the trial's
    state (valid only during the call). ``restore_dir`` continues from such a state.
    """
    task = _task(spec)
    trainer = ChildTrainer(task, data=_data(task))
    kind = get_kind(spec["kind"])
    trainer.reset(initial_lr(spec), spec["seed"], optimizer_factory=kind.optimizer_factory(task, trial_params(spec)))
    driver = LRDriver(spec, trainer)
    history = {"steps": [], "accuracies": [], "seconds": []}
    elapsed = 0.0
    last_checkpoint = 0
    me = spec.get("trial_id")
    lineage: dict = {"parent_trial_id": None, "parent_step": None}
    if restore_dir is not None:
        state = torch.load(Path(restore_dir) / CHECKPOINT_FILE, weights_only=False)
        trainer.load_state_dict(state["child"])
        driver.load_state_dict(state["driver"])
        if kind.population:
            trainer.lr = spec["lr"]  # an exploited trial continues another's weights at its new LR
        history = state["history"]
        elapsed = state["elapsed"]
        last_checkpoint = trainer.step
        torch.set_rng_state(state["torch_rng"])
        lineage = dict(state.get("lineage", lineage))
        owner = state.get("owner")
        if owner is not None and me is not None and owner != me:  # PBT exploit: another member's checkpoint
            lineage = {"parent_trial_id": owner, "parent_step": trainer.step}
    else:
        driver.act()  # a controller decides at step 0 too, as in its training episodes
    every = int(spec["checkpoint_every"])
    fail = spec.get("fail_once")
    losses: list[float] = []

    def after_step(step: int, loss: float) -> None:
        losses.append(loss)
        driver.after_step(step, loss)

    def save(directory: Path) -> None:
        torch.save({"child": trainer.state_dict(), "driver": driver.state_dict(), "history": history,
                    "elapsed": elapsed, "torch_rng": torch.get_rng_state(), "owner": me, "lineage": lineage},
                   directory / CHECKPOINT_FILE)

    row = None
    while trainer.step < task.steps and not trainer.diverged:
        report_at = min(task.steps, (trainer.step // task.eval_every + 1) * task.eval_every)
        started = time.perf_counter()
        while trainer.step < report_at and not trainer.diverged:
            result = trainer.train_steps(driver.next_boundary(trainer.step, report_at) - trainer.step,
                                         after_step=after_step)
            if result.diverged:
                break
            driver.act()
        val = trainer.evaluate("val")
        elapsed += time.perf_counter() - started
        if not math.isfinite(val.loss):
            trainer.diverged = True
        row = {"step": trainer.step, "train_loss": float(sum(losses) / len(losses)) if losses else math.nan,
               "val_loss": val.loss, "val_accuracy": val.accuracy, "lr": driver.last_lr,
               "elapsed_s": elapsed, "final": False, "diverged": trainer.diverged, **lineage}
        losses.clear()
        history["steps"].append(trainer.step)
        history["accuracies"].append(val.accuracy)
        history["seconds"].append(elapsed)
        if trainer.diverged or trainer.step >= task.steps:
            break
        if trainer.step - last_checkpoint >= every:
            last_checkpoint = trainer.step
            with tempfile.TemporaryDirectory(prefix="lrs-ckpt-") as tmp:
                save(Path(tmp))
                report(row, Path(tmp))
        else:
            report(row, None)
        if fail and trainer.step >= fail["at_step"] and not os.path.exists(fail["marker"]):
            # fault injection for tests: {"at_step": n, "marker": path} fails once, after reporting step n
            Path(fail["marker"]).write_text(str(trainer.step))
            raise RuntimeError(f"injected failure at step {trainer.step} (fail_once)")
    if row is None:  # restored from a finished trial's state (PBT can clone one): report where it stands
        val = trainer.evaluate("val")
        row = {"step": trainer.step, "train_loss": math.nan, "val_loss": val.loss, "val_accuracy": val.accuracy,
               "lr": driver.last_lr, "elapsed_s": elapsed, "final": False, "diverged": trainer.diverged, **lineage}
    final = {**row, **_final_metrics(trainer, history, spec["target_accuracy"])}
    final["final"] = True
    with tempfile.TemporaryDirectory(prefix="lrs-ckpt-") as tmp:
        save(Path(tmp))
        report(final, Path(tmp))
    return final


def _final_metrics(trainer, history: Mapping[str, list], target: float) -> dict:
    """Test metrics and LRBench utility / cost / robustness for the finished (or diverged) child."""
    x, y = trainer.split("test")
    logits = trainer.logits(x)
    test_loss = float(trainer.loss(logits, y))
    finite = math.isfinite(test_loss) and bool(logits.isfinite().all())
    util = utility(logits, y) if finite and trainer.task.is_classification else {}  # no accuracy: NaN columns
    train = trainer.evaluate("train") if finite else None
    reached = cost(history["steps"], history["accuracies"], history["seconds"], target)
    nan = math.nan
    util = {k: (nan if v is None else v) for k, v in util.items()}  # e.g. no correct prediction: no confidence
    return {
        "steps_done": trainer.step,
        "diverged": bool(trainer.diverged or not finite),
        "test_loss": test_loss if finite else nan,
        "test_accuracy": float(util.get("top1", nan)),
        "top5_accuracy": float(util.get("top5", nan)),
        "conf_mean_correct": float(util.get("conf_mean_correct", nan)),
        "conf_std_correct": float(util.get("conf_std_correct", nan)),
        "class_conf_spread": float(util.get("class_conf_spread", nan)),
        "train_test_loss_gap": float(loss_gap(train.loss, test_loss)) if train is not None else nan,
        "steps_to_target": reached["steps_to_target"],
        "seconds_to_target": reached["seconds_to_target"],
        "target_accuracy": float(target),
    }


def spec_from_config(config: Mapping[str, Any]) -> dict:
    """The trial spec inside a Tune config: ``{"spec": ...}`` plus, for PBT, top-level ``seed``,
    ``member`` and ``lr``."""
    return {**config["spec"], **{k: config[k] for k in ("seed", "member", "lr") if k in config}}


def tune_trial(config: dict) -> None:
    """The Tune function trainable: :func:`run_trial` reporting through ``tune.report``."""
    torch.set_num_threads(1)
    spec = {**spec_from_config(config), "trial_id": tune.get_context().get_trial_id()}  # owner of its checkpoints
    checkpoint = tune.get_checkpoint()

    def report(metrics: dict, directory: Path | None) -> None:
        clean = {k: (math.nan if v is None else v) for k, v in metrics.items()
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
