"""The controller's PPO on a simulated 2-node cluster: children train on the GPU worker, the learner on the head."""

from __future__ import annotations

import sys

import pytest
from ray import cloudpickle

from lrservice.config import config_from_dict
from lrservice.runtime import plan_placement

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # runners cannot import test modules

CONFIG = {
    "task": {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": 100, "val_subset": 128, "device": "cpu"},
    "controller": {"action_every": 10, "train_batch_size": 100, "minibatch_size": 50, "num_epochs": 1,
                   "num_env_runners": 1},
    "resources": {"worker_resource": "gpu_worker", "head_resource": "head"},
}


def _where(runner):
    """On an env runner: its node and how many child steps its LRControlEnv has trained."""
    import ray

    env = runner.env.unwrapped
    child = env.envs[0].unwrapped.trainer if hasattr(env, "envs") else env.trainer
    return ray.get_runtime_context().get_node_id(), child.step


def test_env_runners_train_children_on_the_worker_and_the_learner_runs_on_the_head(simulated_cluster):
    import ray

    from lrservice.control.ppo import build_ppo_config

    head_id, worker_id = simulated_cluster.head_node.node_id, next(iter(simulated_cluster.worker_nodes)).node_id
    config = config_from_dict(CONFIG)
    placement = plan_placement(config.resources)
    assert placement.env_runner_custom and placement.learner_custom
    algo = build_ppo_config(config, placement).build_algo()
    try:
        result = algo.train()
        runners = algo.env_runner_group.foreach_env_runner(_where, local_env_runner=False)
        learners = [call.get() for call in algo.learner_group.foreach_learner(
            lambda _: ray.get_runtime_context().get_node_id())]
        assert [node for node, _ in runners] == [worker_id]
        assert all(steps > 0 for _, steps in runners)  # the child really trained there
        assert learners == [head_id]
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] >= 100
        assert result["learners"]["default_policy"]["num_module_steps_trained"] > 0
    finally:
        algo.stop()


def test_train_controller_on_the_cluster_writes_a_usable_checkpoint(simulated_cluster, tmp_path):
    """train_controller attaches to the running cluster (no new Ray), places work and checkpoints."""
    from lrservice.control.controller import LearnedController
    from lrservice.control.training import read_log, train_controller

    lines = []
    path = train_controller(config_from_dict(CONFIG), tmp_path, iterations=1, log=lines.append)
    assert any("pinned to nodes with 'gpu_worker'" in line for line in lines)
    assert any("pinned to the node with 'head'" in line for line in lines)
    assert [row["iteration"] for row in read_log(tmp_path / "training_log.parquet")] == [1]
    ctrl = LearnedController.from_checkpoint(path)
    assert ctrl.payload["normaliser"]["count"] > 0 and ctrl.action_every == 10
