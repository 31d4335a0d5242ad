"""Checks before any work starts that more than one command needs: controller files, recommend's LR range.

Each section validates itself when the config is loaded; each command owns the checks across
sections that only it needs (``compare``: :func:`lrservice.compare.arms.check_compare`;
``evaluate-controller``: :func:`lrservice.control.rivals.check_rivals`). A failure is a
:class:`ConfigError` naming the field, so the CLI prints one line and exits 2.
"""

from __future__ import annotations

from lrservice.config import ConfigError, RunConfig


def check_tasks(config: RunConfig, log=None) -> None:
    """A task that names a plugin (``task.model/dataset/loss: "package.module:callable"``) is resolved and
    its contract checked (:func:`lrservice.child.tasks.check_task`), the run's task and each of a
    multi-task controller's; built-in tasks cost nothing here (and no torch import)."""
    tasks = [("task", config.task)] + [(f"controller.tasks[{i}]", t) for i, t in enumerate(config.controller.tasks)]
    plugins = [(path, task) for path, task in tasks if task.plugins]
    if not plugins:
        return
    from lrservice.child.tasks import check_task  # torch, and the user's module: only for a plugin task

    for path, task in plugins:
        line = check_task(task, path)
        if log is not None:
            log(f"[lrservice] {line}")


def check_controller_checkpoint(path: str, field: str) -> None:
    """``path`` must name a controller: ``pretrained:NAME``, an export, a checkpoint or an output dir."""
    from lrservice.control.checkpoint import load_export, resolve_checkpoint  # torch: only when a controller is named

    try:
        where = resolve_checkpoint(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"{field}: {exc}; or give 'auto'") from None
    if where.is_file():
        load_export(where)  # a file that is not an export is one line too


def check_recommend(config: RunConfig) -> None:
    """The task measures accuracy (the recommender targets one); the LR range resolves for the task's
    optimizer (base_lr inside [lr_min, lr_max])."""
    if not config.task.is_classification:
        raise ConfigError(f"task.loss: {config.task.loss!r} measures no accuracy, and recommend targets an accuracy; "
                          "recommend needs a classification task (set task.classification: true if the targets are "
                          "class indices)")
    config.recommend.lr_range(config.task.optimizer)
