"""Shared fixtures: a real local Ray instance, small tasks, and torch kept to one thread."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

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


@pytest.fixture(scope="module")
def simulated_cluster():
    """Two real Ray nodes on this host: head ``{"head": 1}``, 1 CPU; worker with one logical
    GPU and ``{"gpu_worker": 1}``, 1 CPU. The driver is connected; all torn down after.

    ``RAY_TMPDIR`` points at a private dir so that the cluster's address file never makes
    another process's ``ray.init()`` attach to this cluster.
    """
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    old_tmp = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="lrs-")  # short: Ray's socket paths have a length limit
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1, resources={"head": 1})
        cluster.add_node(num_cpus=1, num_gpus=1, resources={"gpu_worker": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
        if old_tmp is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old_tmp


@pytest.fixture
def tiny_task():
    """A digits MLP task small enough for sub-second episodes."""
    from lrservice.config import TaskConfig

    return TaskConfig(dataset="digits", model="mlp", batch_size=32, steps=100, val_subset=128, eval_every=10)


@pytest.fixture
def in_float64():
    """Children built in float64 while the test runs (default dtype restored after); returns the
    function that makes a ChildData float64. Equivalence tests compare paths in float64: float32
    rounding differences grow chaotically over tens of steps and differ between CPUs."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        splits = ("train_x", "val_x", "test_x")
        yield lambda data: dataclasses.replace(data, **{k: getattr(data, k).double() for k in splits})
    finally:
        torch.set_default_dtype(previous)

