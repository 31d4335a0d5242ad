"""One recommender run: train a child under one policy for the budget, reporting as it goes.

:func:`run_child` is the plain loop over a ``report(metrics)`` callback (testable without
Ray); :func:`tune_trial` is the Tune function trainable around it. Every
``task.eval_every`` steps (and at the budget) a report carries ``step`` (Tune's
``time_attr`` for ASHA), ``val_loss`` and ``val_accuracy`` on the task's fixed validation
subset, the mean ``train_loss`` since the last report, the ``lr`` of the last step and
``seconds`` of training so far. The report at the budget adds ``final=True``, full
validation and test metrics, the train-split loss, the train-test loss gap and LRBench's
utility metrics on the test split. A diverged child reports once more with
``diverged=True`` and stops.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
from ray import tune

from lrservice.child.trainer import ChildTrainer, cached_task_data
from lrservice.config import TaskConfig
from lrservice.recommend.metrics import loss_gap, utility
from lrservice.schedules import PolicyScheduler, policy_from_dict

Report = Callable[[dict], None]


def run_child(trainer, policy, seed: int, budget: int, eval_every: int, report: Report) -> None:
    """Train ``trainer``'s child from ``seed`` for ``budget`` steps with ``lr = policy(step)``."""
    trainer.reset(policy(0), seed)
    scheduler = PolicyScheduler(trainer.optimizer, policy)
    last_lr = [trainer.lr]

    def after_step(step: int, loss: float) -> None:
        last_lr[0] = trainer.lr
        scheduler.step()

    started = time.perf_counter()
    while trainer.step < budget:
        result = trainer.train_steps(min(eval_every, budget - trainer.step), after_step=after_step)
        val = trainer.evaluate("val_subset")
        diverged = result.diverged or not math.isfinite(val.loss)
        metrics = {"step": trainer.step, "val_loss": val.loss if math.isfinite(val.loss) else math.inf,
                   "val_accuracy": val.accuracy, "train_loss": result.mean_loss, "lr": last_lr[0],
                   "seconds": time.perf_counter() - started, "diverged": diverged, "final": False}
        if diverged:
            report(metrics)
            return
        if trainer.step >= budget:
            break
        report(metrics)
    full_val = trainer.evaluate("val")
    train = trainer.evaluate("train")
    test_x, test_y = trainer.split("test")
    logits = trainer.logits(test_x)
    test_loss = float(trainer.loss(logits, test_y))
    useful = utility(logits, test_y)
    metrics.update({
        "final": True,
        "final_val_loss": full_val.loss,
        "final_val_accuracy": full_val.accuracy,
        "test_loss": test_loss,
        "test_accuracy": useful["top1"],
        "train_eval_loss": train.loss,
        "loss_gap": loss_gap(train.loss, test_loss),
        **{f"test_{k}": v for k, v in useful.items() if v is not None},
    })
    report(metrics)


def _data(task: TaskConfig):
    """The task's tensors, loaded once per worker process (reused actors skip reloading)."""
    return cached_task_data(task)


def tune_trial(config: dict, task: TaskConfig) -> None:
    """Tune function trainable: ``config["run"]`` holds ``policy`` (a dict), ``seed`` and ``budget``."""
    torch.set_num_threads(1)
    run = config["run"]
    trainer = ChildTrainer(task, data=_data(task))
    run_child(trainer, policy_from_dict(run["policy"]), int(run["seed"]), int(run["budget"]),
              task.eval_every, lambda metrics: tune.report(metrics))
