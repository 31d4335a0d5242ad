"""Fault tolerance on real Ray: a Tune trial whose worker process is SIGKILLed resumes from
its last checkpoint, and a PPO run whose env-runner actor is killed keeps training."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from ray import cloudpickle

from lrservice.files import read_json_lines

pytestmark = pytest.mark.slow
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules

TOTAL_STEPS = 120
CHUNK = 20
KILL_AFTER = 60


def _child_trial(config):
    """Train a digits MLP in chunks, checkpointing model+optimizer after each chunk. On the
    first attempt (no marker file) the worker process kills itself with SIGKILL mid-run."""
    import torch
    from ray import tune

    from lrservice.child.trainer import ChildTrainer
    from lrservice.config import TaskConfig

    torch.set_num_threads(1)
    task = TaskConfig(dataset="digits", model="mlp", batch_size=32, steps=TOTAL_STEPS, val_subset=64)
    child = ChildTrainer(task, device="cpu")
    child.reset(config["lr"], seed=0)
    step, resumed_from, restored_val_loss = 0, 0, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / "child.pt", weights_only=False)
        child.model.load_state_dict(state["model"])
        child.optimizer.load_state_dict(state["optimizer"])
        step = resumed_from = state["step"]
        restored_val_loss = child.evaluate("val").loss
    marker = Path(config["marker"])
    while step < TOTAL_STEPS:
        result = child.train_steps(CHUNK)
        step += result.steps
        val = child.evaluate("val")
        report = {"step": step, "val_loss": val.loss, "resumed_from": resumed_from,
                  "restored_val_loss": restored_val_loss, "pid": os.getpid()}
        with open(config["log"], "a") as f:  # the trial's own record: Tune's history may drop a killed attempt's rows
            f.write(json.dumps(report) + "\n")
        with tempfile.TemporaryDirectory() as d:
            torch.save({"model": child.model.state_dict(), "optimizer": child.optimizer.state_dict(),
                        "step": step}, Path(d) / "child.pt")
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(d))
        if step >= KILL_AFTER and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


def test_killed_trial_resumes_from_its_checkpoint(ray_local, tmp_path):
    from ray import tune

    marker, log = tmp_path / "killed-once", tmp_path / "reports.jsonl"
    tuner = tune.Tuner(
        tune.with_resources(_child_trial, {"cpu": 1}),
        param_space={"lr": 1e-2, "marker": str(marker), "log": str(log)},
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="ft", verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    result = tuner.fit()[0]
    assert result.error is None
    assert marker.exists(), "the first attempt never killed itself"
    history = pd.DataFrame(read_json_lines(log))
    final = result.metrics
    assert final["step"] == TOTAL_STEPS
    killed_pid = int(marker.read_text())
    before = history[history["pid"] == killed_pid]
    after = history[history["pid"] != killed_pid]
    assert not after.empty and before["step"].max() == KILL_AFTER
    # The retry started from the last checkpoint (step 60), not from scratch ...
    assert set(after["resumed_from"]) == {KILL_AFTER}
    assert after["step"].min() == KILL_AFTER + CHUNK
    # ... with the checkpointed weights: the restored model's validation loss recomputed in
    # the new process equals the one the killed process reported with that checkpoint.
    saved_loss = float(before.loc[before["step"] == KILL_AFTER, "val_loss"].iloc[0])
    assert after["restored_val_loss"].iloc[0] == pytest.approx(saved_loss, rel=1e-6)


def _ppo_config():
    """lrservice's own PPO config (LR-control env on a tiny digits child, one remote env runner),
    exactly as ``train-controller`` builds it, fault tolerance included."""
    from lrservice.config import config_from_dict
    from lrservice.control.ppo import build_ppo_config
    from lrservice.runtime import plan_placement

    run = config_from_dict({
        "task": {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": 60, "val_subset": 64},
        "controller": {"action_every": 10, "train_batch_size": 60, "minibatch_size": 30, "num_epochs": 1,
                       "num_env_runners": 1, "num_envs_per_env_runner": 1},
    })
    config = build_ppo_config(run, plan_placement(run.resources))
    assert config.restart_failed_env_runners and config.num_env_runners == 1
    return config


def test_killed_env_runner_is_restarted_and_training_continues(ray_local):
    import ray

    algo = _ppo_config().build_algo()
    try:
        runners = algo.env_runner_group
        before = algo.train()
        assert runners.num_healthy_remote_env_runners() == 1 and runners.num_remote_worker_restarts() == 0
        victim = runners._worker_manager.actors()[runners.healthy_env_runner_ids()[0]]
        victim_pid = ray.get(victim.apply.remote(lambda runner: __import__("os").getpid()))
        ray.kill(victim, no_restart=False)  # a crash: Ray restarts the actor, RLlib probes and restores it

        def runner_pids():
            return runners.foreach_env_runner(lambda runner: __import__("os").getpid(), local_env_runner=False,
                                              timeout_seconds=30)

        results = []
        while len(results) < 10 and (len(results) < 2 or runners.num_healthy_remote_env_runners() < 1
                                     or runner_pids() in ([], [victim_pid])):
            results.append(algo.train())  # raises if the failure were not tolerated
        assert results[-1]["training_iteration"] == before["training_iteration"] + len(results)
        assert runners.num_healthy_remote_env_runners() == 1
        (new_pid,) = runner_pids()
        assert new_pid != victim_pid  # a fresh process replaced the killed one
        sampled = algo.train()["env_runners"]["num_env_steps_sampled_lifetime"]
        assert sampled > results[-1]["env_runners"]["num_env_steps_sampled_lifetime"]  # and it samples
    finally:
        algo.stop()
