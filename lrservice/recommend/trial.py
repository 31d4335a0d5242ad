"""One recommender run: one child under one policy for the budget, through the one runner, reporting as it goes.

A run is a child of arm kind ``policy`` (its params the policy's dict, as in a ``compare``
arm) trained by :class:`lrservice.runner.ScheduledChildren`, the runner of compare's trials
and evaluate-controller's rivals, on the task with ``steps`` set to the recommender's
``budget`` (``task.steps`` is not used). So a recommend run and a compare child of the same
policy, seed and task train and measure alike, under the same names.

:func:`run_child` is the plain loop over a ``report(metrics)`` callback (testable without
Ray); :func:`tune_trial` is the Tune function trainable around it. Every ``task.eval_every``
steps (and at the budget) a report carries the runner's row: ``step`` (Tune's ``time_attr``
for ASHA), ``val_loss`` and ``val_accuracy`` on the whole validation split (a non-finite
``val_loss`` is reported as +inf), the mean ``train_loss`` since the last report, the ``lr``
the last step used and ``elapsed_s``, the child's training seconds so far. The report at
the budget, or at the row where the child diverged (it stops there), adds ``final=True``
and :meth:`ScheduledChildren.final`'s metrics (``test_loss``, ``test_accuracy``,
``top5_accuracy``, ``train_test_loss_gap``, ...).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Mapping

import torch
from ray import tune

from lrservice.child.data import ChildData
from lrservice.child.trainer import cached_task_data
from lrservice.config import TaskConfig
from lrservice.runner import ChildRun, ScheduledChildren

Report = Callable[[dict], None]
KIND = "policy"


def budget_task(task: TaskConfig, budget: int) -> TaskConfig:
    """The task a recommend run trains: ``task`` with ``steps`` set to the budget."""
    return replace(task, steps=int(budget))


def run_child(task: TaskConfig, policy: Mapping, seed: int, budget: int, target: float, report: Report,
              data: ChildData | None = None) -> dict:
    """Train one child from ``seed`` for ``budget`` steps under ``policy`` (a policy dict); returns its last report.

    ``target`` is the validation accuracy whose first reach is the run's cost (``steps_to_target``).
    """
    task = budget_task(task, budget)
    runner = ScheduledChildren(task, [ChildRun(KIND, dict(policy), int(seed))],
                               data=data if data is not None else cached_task_data(task))
    metrics: dict = {}
    while not runner.done:
        _, (metrics,) = runner.advance(target)
        if not math.isfinite(metrics["val_loss"]):
            metrics["val_loss"] = math.inf  # ASHA's metric, as compare's trial metric counts a diverged child
        report(metrics)
    return metrics


def tune_trial(config: dict, task: TaskConfig, target: float) -> None:
    """Tune function trainable: ``config["run"]`` holds ``policy`` (a dict), ``seed`` and ``budget``."""
    torch.set_num_threads(1)
    run = config["run"]

    def report(metrics: dict) -> None:
        tune.report({k: (math.nan if v is None else v) for k, v in metrics.items()})

    run_child(task, run["policy"], int(run["seed"]), int(run["budget"]), target, report)
