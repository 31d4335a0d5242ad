"""On a simulated two-node cluster (CPU head + worker with a logical GPU), Tune trials
requesting ``plan_placement(...).trial`` run on the worker node, never the head."""

from __future__ import annotations

import sys

import pytest
from ray import cloudpickle

from lrservice.config import ResourcesConfig
from lrservice.runtime import CUSTOM_FRACTION, plan_placement

pytestmark = pytest.mark.slow
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules


def _node_ids(cluster) -> tuple[str, str]:
    return cluster.head_node.node_id, next(iter(cluster.worker_nodes)).node_id


def _trial(config):
    """Train a tiny child for a few steps and record where it ran."""
    import os

    import ray
    import torch
    from ray import tune

    from lrservice.child.trainer import ChildTrainer
    from lrservice.config import TaskConfig

    torch.set_num_threads(1)
    task = TaskConfig(dataset="digits", model="mlp", batch_size=32, steps=20, val_subset=64)
    child = ChildTrainer(task, device="cpu")
    child.reset(config["lr"], seed=0)
    result = child.train_steps(20)
    ctx = ray.get_runtime_context()
    tune.report({
        "node_id": ctx.get_node_id(),
        "gpu_ids": ",".join(map(str, ray.get_gpu_ids())),
        "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "mean_loss": result.mean_loss,
        "steps": result.steps,
    })


def test_live_cluster_placement_decision(simulated_cluster):
    import ray

    live = plan_placement(ResourcesConfig(gpus_per_trial=1, worker_resource="gpu_worker", head_resource="head"))
    assert live.trial == {"cpu": 1.0, "gpu": 1.0, "gpu_worker": CUSTOM_FRACTION} and live.uses_gpu
    assert live.learner_custom == {"head": CUSTOM_FRACTION}
    assert plan_placement(ResourcesConfig(), ray.cluster_resources()) == plan_placement(ResourcesConfig())


PLACEMENTS = {
    "worker_resource": ResourcesConfig(worker_resource="gpu_worker"),  # pinned by the custom resource
    "gpu": ResourcesConfig(gpus_per_trial=1.0),                        # pinned by the (logical) GPU
}


def test_tune_trials_land_on_the_gpu_worker(simulated_cluster, tmp_path):
    """One trial per way of pinning; both must run on the worker (the head has a free CPU too)."""
    from ray import tune

    head_id, worker_id = _node_ids(simulated_cluster)
    requests = {name: plan_placement(res).trial for name, res in PLACEMENTS.items()}
    assert requests["worker_resource"] == {"cpu": 1.0, "gpu_worker": CUSTOM_FRACTION}
    assert requests["gpu"] == {"cpu": 1.0, "gpu": 1.0}
    tuner = tune.Tuner(
        tune.with_resources(_trial, lambda config: requests[config["pin"]]),
        param_space={"pin": tune.grid_search(list(PLACEMENTS)), "lr": 1e-2},
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="placement", verbose=0),
    )
    results = tuner.fit()
    assert not results.errors
    frame = results.get_dataframe().set_index("config/pin")
    assert sorted(frame.index) == sorted(PLACEMENTS)
    assert set(frame["node_id"]) == {worker_id} and head_id != worker_id
    assert (frame["steps"] == 20).all() and frame["mean_loss"].notna().all()
    assert frame.loc["gpu", "gpu_ids"] == "0" and frame.loc["gpu", "cuda_visible"] == "0"
    assert frame.loc["worker_resource", "gpu_ids"] == ""



def test_a_batched_compare_trial_asks_for_a_gpu_fraction_and_lands_on_the_gpu_worker(simulated_cluster, tmp_path):
    """``resources.gpus_per_trial: 0.5``: every compare trial (a batch of children) requests half a GPU, so
    Ray places it on the worker, the one node with a (logical) GPU; ``task.device: auto`` trains the batch on
    what the process sees (the logical GPU is a scheduling token only: CPU here)."""
    import pandas as pd

    from lrservice.compare.experiment import run_compare
    from lrservice.compare.population import read_reports
    from lrservice.config import config_from_dict

    _, worker_id = _node_ids(simulated_cluster)
    config = config_from_dict({
        "task": {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": 40, "eval_every": 20,
                 "val_subset": 64, "device": "auto"},
        "compare": {"name": "gpu", "output_dir": str(tmp_path), "tune_seeds": [100], "seeds": [0, 1, 2],
                    "max_concurrent_trials": 2, "report": False,
                    "arms": [{"name": "constant", "kind": "constant", "grid": {"lr": [0.001, 0.01]}},
                             {"name": "cosine", "kind": "cosine", "params": {"lr": 0.003}}]},
        "resources": {"cpus_per_trial": 0.5, "gpus_per_trial": 0.5},
    })
    lines: list[str] = []
    run_dir = run_compare(config, log=lines.append)
    assert any("each trial (a batch of children) asks for {'cpu': 0.5, 'gpu': 0.5}" in line for line in lines), lines
    parts = run_dir / "parts"
    reports = [r for name in ("tune", "eval") for rs in read_reports(parts / f"{name}.reports.jsonl").values()
               for r in rs]
    assert len({r["trial_id"] for r in reports}) == 3  # one tune trial (2 points x 1 seed), two eval trials (3 seeds)
    assert {r["node_id"] for r in reports} == {worker_id}
    assert all(r["gpu_ids"] == "0" for r in reports)
    assert {r["device"] for r in reports} == {"cpu"} and {r["pool"] for r in reports} == {"batched (mlp fast path)"}
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert sorted(trials.groupby("phase").size().items()) == [("eval", 6), ("tune", 2)]
