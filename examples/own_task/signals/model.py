"""A small 1-D conv net: two conv/ReLU/pool stages, global average pooling, a linear ``head``."""

from __future__ import annotations

import torch
from torch import nn


class ConvNet1d(nn.Module):
    """lrservice's model contract: ``factory(input_shape, num_classes, **model_args)`` -> logits.

    The output layer is called ``head`` so the controller's paper features find it (without
    that name lrservice takes the last layer with a weight).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(input_shape[0], channels, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(channels, 2 * channels, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(2 * channels, 2 * channels, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=2))
