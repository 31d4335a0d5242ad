"""Waveforms: classify noisy, shifted 1-D signals into six shapes.

Each sample is one of sine, square, triangle, sawtooth, rising chirp and falling chirp, with a
random frequency, phase, amplitude and offset, plus Gaussian noise, 64 points long. Generated
from a seed (no files, no network), so every process builds the same splits.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

CLASSES = ("sine", "square", "triangle", "sawtooth", "chirp_up", "chirp_down")


def waveforms(n: int, length: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` signals ``(n, 1, length)`` and their class indices ``(n,)``."""
    y = rng.integers(0, len(CLASSES), size=n)
    t = np.linspace(0.0, 1.0, length)[None, :]
    freq = rng.uniform(1.5, 4.0, size=(n, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, 1))
    cycles = freq * t + phase / (2 * np.pi)
    frac = cycles % 1.0
    chirp = lambda sign: np.sin(2 * np.pi * (freq * t + sign * 2.0 * t ** 2) + phase)
    shapes = np.stack([
        np.sin(2 * np.pi * cycles),
        np.sign(np.sin(2 * np.pi * cycles)),
        4 * np.abs(frac - 0.5) - 1,
        2 * frac - 1,
        chirp(+1.0),
        chirp(-1.0),
    ])  # (classes, n, length)
    x = shapes[y, np.arange(n)]
    x = x * rng.uniform(0.5, 1.5, size=(n, 1)) + rng.uniform(-0.5, 0.5, size=(n, 1))
    x = x + rng.normal(0.0, noise, size=x.shape)
    return x[:, None, :].astype(np.float32), y.astype(np.int64)


def load(root: str, num_samples: int = 6000, test_samples: int = 2000, length: int = 64, noise: float = 0.8,
         seed: int = 7) -> dict:
    """lrservice's dataset contract: ``loader(root, **dataset_args)`` -> ``{"train", "test", ...}``.

    ``train`` is a ``torch.utils.data.Dataset`` of ``(x, y)`` items (lrservice holds out its
    validation split from it); ``test`` is a pair of arrays. ``root`` (lrservice's data directory)
    is unused: the data is generated.
    """
    rng = np.random.default_rng(seed)
    x, y = waveforms(num_samples, length, noise, rng)
    x_test, y_test = waveforms(test_samples, length, noise, rng)
    return {"train": TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), "test": (x_test, y_test),
            "num_classes": len(CLASSES)}
