"""Child networks sized from the dataset's input shape: MLP, LeNet-5, ResNet-18 (CIFAR variant).

Every model ends in an ``nn.Linear`` called ``head`` so the controller's features
(mean and variance of the output layer's weights) find it the same way for all.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lrservice.child.names import MODELS


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


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build a child model by name for inputs of ``input_shape`` (C, H, W)."""
    if name == "mlp":
        return MLP(input_shape, num_classes)
    if name == "lenet5":
        return LeNet5(input_shape, num_classes)
    if name == "resnet18":
        return ResNet18(input_shape, num_classes)
    raise ValueError(f"task.model: {name!r} is not allowed; choose one of: {', '.join(MODELS)}")
