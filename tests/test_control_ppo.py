"""PPO config for the controller, the training log, and `lrservice train-controller` end to end."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from lrservice.cli import main
from lrservice.config import ConfigError, config_from_dict
from lrservice.control.checkpoint import CHECKPOINTS, LATEST, META_FILE, latest_checkpoint
from lrservice.control.env import ENV_NAME
from lrservice.control.training import (
    LOG_COLUMNS,
    LOG_FILE,
    children_note,
    progress_line,
    read_log,
    train_controller,
    write_log,
)
from lrservice.control.vector_env import VECTOR_ENV_NAME
from lrservice.runtime import Placement

TASK = {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": 100, "val_subset": 128, "device": "cpu"}
CONTROLLER = {"action_every": 10, "train_batch_size": 100, "minibatch_size": 50, "num_epochs": 2,
              "iterations": 2, "checkpoint_every": 1, "num_env_runners": 1}


def run_config(**controller):
    return config_from_dict({"task": TASK, "controller": {**CONTROLLER, **controller}, "resources": {"num_cpus": 2}})


def test_ppo_config_models_batches_and_fault_tolerance():
    from ray.rllib.connectors.env_to_module import MeanStdFilter

    from lrservice.control.ppo import build_ppo_config

    cfg = build_ppo_config(run_config(hidden=[32, 32], ppo_lr=1e-3, gamma=0.9, clip_param=0.1, kl_coeff=0.05,
                                      kl_target=0.002), Placement(note="test"))
    assert cfg.enable_rl_module_and_learner and cfg.enable_env_runner_and_connector_v2
    assert cfg.env == ENV_NAME and cfg.env_config["controller"]["action_every"] == 10
    model = cfg.model_config
    assert list(model["fcnet_hiddens"]) == [32, 32] and model["vf_share_layers"] is False
    assert (cfg.train_batch_size_per_learner, cfg.minibatch_size, cfg.num_epochs) == (100, 50, 2)
    assert (cfg.lr, cfg.gamma, cfg.clip_param) == (1e-3, 0.9, 0.1)
    assert (cfg.use_kl_loss, cfg.kl_coeff, cfg.kl_target) == (True, 0.05, 0.002)
    assert cfg.entropy_coeff == 0.0
    decaying = build_ppo_config(run_config(ppo_lr=1e-3, ppo_lr_final=1e-4, entropy_coeff=0.02, entropy_coeff_final=0.0),
                                Placement(note="test"), iterations=4)
    assert decaying.lr == [[0, 1e-3], [4 * 100, 1e-4]]  # over the run's 4 iterations x train batch 100
    assert decaying.entropy_coeff == [[0, 0.02], [4 * 100, 0.0]]
    assert cfg.num_env_runners == 1 and cfg.rollout_fragment_length == 100
    assert cfg.num_learners == 0
    assert cfg.restart_failed_env_runners is True
    assert cfg.sample_timeout_s >= 600  # a slow child must not make RLlib drop a whole iteration's samples
    assert isinstance(cfg._env_to_module_connector(None, None, None), MeanStdFilter)


def test_ppo_config_follows_placement_and_vector_env():
    from lrservice.control.ppo import build_ppo_config

    placement = Placement(env_runner_cpus=1.0, env_runner_gpus=0.25, env_runner_custom={"gpu_worker": 0.01},
                          learner_custom={"head": 0.01}, note="test")
    cfg = build_ppo_config(run_config(num_env_runners=2, num_envs_per_env_runner=4, train_batch_size=200), placement)
    assert cfg.num_gpus_per_env_runner == 0.25
    assert cfg.custom_resources_per_env_runner == {"gpu_worker": 0.01}
    assert cfg.num_learners == 1 and cfg.custom_resources_per_learner == {"head": 0.01}
    assert cfg.env == VECTOR_ENV_NAME and cfg.num_envs_per_env_runner == 4
    assert str(cfg.gym_env_vectorize_mode).lower().endswith("vector_entry_point")
    assert cfg.rollout_fragment_length * 2 * 4 == 200  # each runner samples an equal share of the batch


def test_progress_names_how_each_tasks_children_train():
    """One child per env runner is separate; a vector env's pool per task is batched when its model vmaps."""
    assert children_note(run_config()).startswith("separate (one child per env runner")
    steps = TASK["steps"]
    assert children_note(run_config(num_envs_per_env_runner=4)) == f"digits/mlp/adam/{steps} batched (mlp fast path)"
    tasks = [{**TASK, "model": "lenet5"}, TASK, {**TASK, "model": "lenet5", "seed": 3}]
    assert children_note(run_config(num_envs_per_env_runner=4, tasks=tasks)) == (
        f"digits/lenet5/adam/{steps}#0 batched (vmap); digits/mlp/adam/{steps} batched (mlp fast path); "
        f"digits/lenet5/adam/{steps}#2 batched (vmap)")


def test_log_is_atomic_parquet_and_progress_line_names_the_numbers(tmp_path):
    rows = [{name: float(i) for name in LOG_COLUMNS} | {"iteration": i, "checkpoint": ""} for i in (1, 2)]
    path = tmp_path / LOG_FILE
    write_log(rows, path)
    assert [p.name for p in tmp_path.iterdir()] == [LOG_FILE]  # no temp file left behind
    assert pq.read_schema(path).names == list(LOG_COLUMNS)
    assert read_log(path) == rows
    line = progress_line(rows[1] | {"lr_start": 1e-3, "lr_end": 2e-3, "final_val_loss": 0.25}, 5)
    assert line.startswith("[lrservice] iter 2/5") and "1.00e-03->2.00e-03" in line and "0.2500" in line


def test_iterations_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="iterations: 0"):
        train_controller(run_config(), tmp_path, iterations=0)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cli_trains_checkpoints_logs_and_resumes(tmp_path, capsys, monkeypatch):
    """`lrservice train-controller` end to end on real Ray: 2 iterations, then --resume to 3;
    PPO's own LR decays linearly to ``ppo_lr_final`` over the run's total iterations, its entropy bonus
    to ``entropy_coeff_final``."""
    import ray

    import lrservice.cli

    monkeypatch.setattr(lrservice.cli, "COMMANDS", ("train_controller",))  # only this command's parser

    if ray.is_initialized():
        ray.shutdown()
    cfg_file = tmp_path / "ctrl.yaml"
    controller = {**CONTROLLER, "ppo_lr": 1e-3, "ppo_lr_final": 0.0,
                  "entropy_coeff": 0.02, "entropy_coeff_final": 0.005, "kl_coeff": 0.05, "kl_target": 0.002}
    cfg_file.write_text(yaml.safe_dump({"task": TASK, "controller": controller, "resources": {"num_cpus": 2}}))

    def decayed(lifetime: float, iterations: int, start: float = 1e-3, final: float = 0.0) -> float:
        """Linear from ``start`` at 0 to ``final`` at the run's end, then held (an independent reference)."""
        done = min(1.0, lifetime / (iterations * CONTROLLER["train_batch_size"]))
        return start + (final - start) * done

    out = tmp_path / "out"
    try:
        assert main(["train-controller", "--config", str(cfg_file), "--output", str(out)]) == 0
        first = capsys.readouterr().out
        assert first.count("[lrservice] iter ") == 2 and "env steps/s" in first
        ckpt = latest_checkpoint(out)
        assert ckpt == out / CHECKPOINTS / "iter_000002" and (out / LATEST).read_text() == "iter_000002"
        assert (ckpt / "learner_group/learner/rl_module/default_policy").is_dir()
        assert (ckpt / "env_runner/env_to_module_connector/MeanStdFilter").is_dir()
        meta = json.loads((ckpt / META_FILE).read_text())
        assert meta["iteration"] == 2 and meta["controller"]["action_every"] == 10 and meta["task"]["model"] == "mlp"
        log = read_log(out / LOG_FILE)
        assert [r["iteration"] for r in log] == [1, 2]
        for r in log:
            # Every iteration samples at least the train batch; the lifetime counter is their running sum.
            assert r["env_steps"] >= CONTROLLER["train_batch_size"]
            assert math.isfinite(r["final_val_loss"]) and r["final_val_loss"] > 0
            assert 1e-5 <= r["lr_min"] <= r["lr_median"] <= r["lr_max"] <= 1e-1
            # One runner: the last episode's LR trajectory starts at one of the initial LRs.
            assert min(abs(r["lr_start"] - lr) / lr for lr in (1e-2, 1e-3, 1e-4)) < 1e-9
            assert r["lr_min"] <= r["lr_start"] <= r["lr_max"] and r["lr_min"] <= r["lr_end"] <= r["lr_max"]
            # An episode is 10 actions, each rewarded -val_loss (finite, > 0): the return lies in [-10 * max, 0).
            assert -10 * 10 <= r["episode_return_mean"] < 0
            assert r["ppo_lr"] == pytest.approx(decayed(r["env_steps_lifetime"], 2), abs=1e-9)
            assert r["entropy_coeff"] == pytest.approx(decayed(r["env_steps_lifetime"], 2, 0.02, 0.005), abs=1e-9)
        # RLlib's adaptive KL penalty starts at kl_coeff and after each update is scaled by 1.5, 1 or 0.5,
        # by how far the update moved the policy against kl_target.
        coeff = 0.05
        for r in log:
            assert math.isfinite(r["mean_kl"]) and r["mean_kl"] >= 0
            # (RLlib keeps it as a float32 tensor: equal to 6 digits, not to the bit.)
            assert any(r["kl_coeff"] == pytest.approx(coeff * f, rel=1e-6) for f in (0.5, 1.0, 1.5)), (coeff, r)
            coeff = r["kl_coeff"]
        assert log[0]["ppo_lr"] > 0 and log[1]["ppo_lr"] == 0.0
        assert 0.005 < log[0]["entropy_coeff"] < 0.02 and log[1]["entropy_coeff"] == pytest.approx(0.005)
        assert np.isclose(log[1]["env_steps_lifetime"], log[0]["env_steps"] + log[1]["env_steps"])
        assert log[0]["checkpoint"].endswith("iter_000001") and log[1]["checkpoint"].endswith("iter_000002")

        # Without --resume an existing output dir is refused (exit 2, message names --output).
        assert main(["train-controller", "--config", str(cfg_file), "--output", str(out)]) == 2
        assert "--output" in capsys.readouterr().err

        # A crash that lost checkpoint 2: resume restarts from 1, drops log row 2 and redoes it.
        shutil.rmtree(out / CHECKPOINTS / "iter_000002")
        (out / LATEST).write_text("iter_000001")
        assert main(["train-controller", "--config", str(cfg_file), "--output", str(out),
                     "--resume", "--iterations", "3"]) == 0
        resumed = capsys.readouterr().out
        assert "resumed from" in resumed and "iter_000001" in resumed and resumed.count("[lrservice] iter ") == 2
        redone = read_log(out / LOG_FILE)
        assert [r["iteration"] for r in redone] == [1, 2, 3]
        assert redone[0] == log[0]
        # The restored step counter continues from checkpoint 1, not from zero and not from lost row 2.
        assert np.isclose(redone[1]["env_steps_lifetime"], log[0]["env_steps_lifetime"] + redone[1]["env_steps"])
        # --iterations 3 stretches the decay over the new total.
        for r in redone[1:]:
            assert r["ppo_lr"] == pytest.approx(decayed(r["env_steps_lifetime"], 3), abs=1e-9)
            assert r["entropy_coeff"] == pytest.approx(decayed(r["env_steps_lifetime"], 3, 0.02, 0.005), abs=1e-9)
        assert latest_checkpoint(out).name == "iter_000003"
    finally:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_refuses_a_checkpoint_trained_under_another_envelope(tmp_path):
    """The envelope is part of what an action means: resuming across it would mix two problems."""
    trained = run_config(envelope="cosine")
    ckpt = tmp_path / CHECKPOINTS / "iter_000001"
    ckpt.mkdir(parents=True)
    plain = trained.to_dict()
    (ckpt / META_FILE).write_text(json.dumps({"iteration": 1, "env_steps": 100.0, "task": plain["task"],
                                              "controller": plain["controller"]}))
    (tmp_path / LATEST).write_text(ckpt.name)
    with pytest.raises(ConfigError, match=r"^controller\.envelope: 'none' differs from the checkpoint"):
        train_controller(run_config(envelope="none"), tmp_path, iterations=2, resume=True, log=lambda line: None)


def test_vector_env_runner_trains_k_children_per_runner(tmp_path):
    """num_envs_per_env_runner > 1: LRVectorEnv in the runner, K episodes finish together."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = run_config(num_envs_per_env_runner=2, train_batch_size=40, minibatch_size=20, num_epochs=1)
        config = config.replace(task={"steps": 50})
        train_controller(config, tmp_path, iterations=1, log=lambda line: None)
    finally:
        ray.shutdown()
    (row,) = read_log(tmp_path / LOG_FILE)
    assert row["env_steps"] >= 40 and row["episodes"] >= 2  # 5-action episodes, 2 children per runner
    assert row["episode_len_mean"] == 5
    assert min(abs(row["lr_start"] - lr) / lr for lr in (1e-2, 1e-3, 1e-4)) < 1e-9
    assert math.isfinite(row["final_val_loss"])
