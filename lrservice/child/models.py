"""Child networks sized from the dataset's input shape: MLP, LeNet-5, ResNet-18 (CIFAR variant).

Every built-in model ends in an ``nn.Linear`` called ``head`` so the controller's features
(mean and variance of the output layer's weights) find it the same way for all. A user's
model comes through the same door (:func:`build_model`): ``factory(input_shape, num_classes,
**model_args)`` returning an ``nn.Module`` (:func:`lrservice.child.observer.output_layer` finds its output layer).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from lrservice.child.names import MODELS
from lrservice.child.plugins import resolve
from lrservice.errors import ConfigError


class MLP(nn.Module):
    """Flatten, then hidden layers with ReLU (3 by default, as in 1909.09712), then ``head``."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (256, 128, 64)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class LeNet5(nn.Module):
    """LeNet-5: two 5x5 conv + max-pool stages (6 and 16 maps), then 120-84-``head``.

    Convolutions pad by 2 so small inputs (8x8 digits) keep a spatial extent; on 28x28
    this is the classic layout (28 -> 14 -> 7 with padding).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        channels = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            width = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.body = nn.Sequential(nn.Linear(width, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.head = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.features(x)))


class ResNet18(nn.Module):
    """torchvision's ResNet-18 with the CIFAR stem: 3x3 stride-1 first conv, no max-pool."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None, num_classes=num_classes)
        net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        self.head = net.fc
        net.fc = nn.Identity()
        self.body = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, args: Mapping[str, Any] | None = None,
                plugin_dirs: Sequence[str] = ()) -> nn.Module:
    """Build a child model — a built-in by name or a plugin ``"package.module:factory"`` — for inputs of
    ``input_shape`` (without the batch dimension) and ``num_classes`` outputs."""
    factory = resolve("task.model", name, MODELS, plugin_dirs, "model factory")
    try:
        model = factory(tuple(input_shape), int(num_classes), **dict(args or {}))
    except Exception as exc:
        raise ConfigError(f"task.model: factory {name!r} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"task.model: factory {name!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def task_model(task, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model a :class:`~lrservice.config.TaskConfig` names, with its ``model_args``."""
    return build_model(task.model, input_shape, num_classes, task.model_args, task.plugin_dirs)

