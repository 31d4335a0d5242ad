"""Shared fixtures: a real local Ray instance, small tasks, and torch kept to one thread."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("LRSERVICE_DASHBOARD", "0")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray instance for the module (2 CPUs, no dashboard), always shut down."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def tiny_task():
    """A digits MLP task small enough for sub-second episodes."""
    from lrservice.config import TaskConfig

    return TaskConfig(dataset="digits", model="mlp", batch_size=32, steps=100, val_subset=128, eval_every=10)
