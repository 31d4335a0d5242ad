"""The task contract, checked once before any work: data loads, the model builds, maps a batch to
outputs of the right width, and the loss gives a finite scalar that backpropagates.

Every command runs :func:`check_task` on the config's task (and a multi-task controller's tasks)
right after loading the config, before Ray starts: a broken plugin is one ``lrservice:`` line
naming the field, never a failed trial on a worker.
"""

from __future__ import annotations

import math

import torch

from lrservice.child.models import task_model
from lrservice.child.observer import output_layer
from lrservice.child.trainer import cached_task_data, task_loss
from lrservice.config import ConfigError, TaskConfig


def check_task(task: TaskConfig, path: str = "task") -> str:
    """Load the task's data, build its model and take one loss on two training samples; returns a
    one-line description. Raises :class:`ConfigError` (``<path>.dataset/.model/.loss: ...``)."""
    try:
        data = cached_task_data(task)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("task.", f"{path}.", 1)) from None
    torch.manual_seed(0)
    field = f"{path}.model"
    try:
        model = task_model(task, data.input_shape, data.num_classes)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("task.", f"{path}.", 1)) from None
    x, y = data.train_x[:2], data.train_y[:2]
    try:
        out = model(x)
    except Exception as exc:
        raise ConfigError(f"{field}: {task.model!r} failed on a batch of inputs {tuple(x.shape)}: "
                          f"{type(exc).__name__}: {exc}") from None
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{field}: {task.model!r} returned a {type(out).__name__} for a batch; "
                          "it must return one tensor of outputs (logits)")
    if task.is_classification and tuple(out.shape) != (len(x), data.num_classes):
        raise ConfigError(f"{field}: {task.model!r} maps a batch of {len(x)} to shape {tuple(out.shape)}; "
                          f"expected ({len(x)}, {data.num_classes}) (batch, num_classes)")
    if not task.is_classification and (out.ndim < 1 or out.shape[0] != len(x)):
        raise ConfigError(f"{field}: {task.model!r} maps a batch of {len(x)} to shape {tuple(out.shape)}; "
                          "the first dimension must be the batch")
    try:
        output_layer(model)
    except ValueError:
        raise ConfigError(f"{field}: {task.model!r} has no layer with a 'weight' parameter for the controller's "
                          "features; name its output layer 'head'") from None
    loss_field = f"{path}.loss"
    try:
        loss = task_loss(task)(out, y)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("task.", f"{path}.", 1)) from None
    except Exception as exc:
        raise ConfigError(f"{loss_field}: {task.loss!r} failed on outputs {tuple(out.shape)} and targets "
                          f"{tuple(y.shape)}: {type(exc).__name__}: {exc}") from None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
        raise ConfigError(f"{loss_field}: {task.loss!r} must return a scalar tensor that depends on the outputs "
                          f"(got {type(loss).__name__}{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''})")
    if not math.isfinite(float(loss.detach())):
        raise ConfigError(f"{loss_field}: {task.loss!r} is {float(loss.detach())} on a fresh model's outputs; "
                          "it must be finite")
    loss.backward()
    params = sum(p.numel() for p in model.parameters())
    shape = "x".join(map(str, data.input_shape))
    outputs = f"{data.num_classes} classes" if task.is_classification else f"{data.num_classes} outputs"
    return (f"{path}: model {task.model} ({params:,} parameters) on {task.dataset} "
            f"(train {len(data.train_x):,} / val {len(data.val_x):,} / test {len(data.test_x):,}, "
            f"input {shape}, {outputs}), loss {task.loss}")
