"""A tiny comparison end to end on a real local Ray: Parquet schema, row counts, winners, retries."""

from __future__ import annotations

import json
import math

import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import record_child

from lrservice.compare.results import STEPS_SCHEMA, TRIALS_SCHEMA
from lrservice.config import config_from_dict

STEPS, EVAL_EVERY = 60, 20


def _config(tmp_path, **compare):
    return config_from_dict({
        "task": {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": STEPS, "eval_every": EVAL_EVERY,
                 "val_subset": 128},
        "compare": {
            "name": "tiny", "output_dir": str(tmp_path), "tune_seeds": [100], "seeds": [0, 1],
            "max_concurrent_trials": 2, "checkpoint_every": 40,
            "arms": [
                {"name": "constant", "kind": "constant", "grid": {"lr": [0.0003, 0.01]}},
                {"name": "step", "kind": "step", "params": {"lr": 0.003, "step_size": 30, "gamma": 0.5}},
                {"name": "cosine", "kind": "cosine", "params": {"lr": 0.003}},
                {"name": "cyclic", "kind": "cyclic", "params": {"base_lr": 0.0001, "max_lr": 0.01, "step_size_up": 15}},
                {"name": "cos-zoo", "kind": "policy", "params": {"name": "COS", "k0": 0.0, "k1": 0.01, "l": 60}},
            ],
            **compare,
        },
        "resources": {"num_cpus": 2},
    })


@pytest.mark.slow
def test_tiny_comparison_end_to_end(ray_local, tmp_path):
    from lrservice.compare.experiment import run_compare

    lines: list[str] = []
    run_dir = run_compare(_config(tmp_path), log=lines.append)
    assert run_dir == (tmp_path / "tiny").resolve()
    assert pq.read_schema(run_dir / "steps.parquet").equals(STEPS_SCHEMA, check_metadata=False)
    assert pq.read_schema(run_dir / "trials.parquet").equals(TRIALS_SCHEMA, check_metadata=False)
    steps = pd.read_parquet(run_dir / "steps.parquet")
    trials = pd.read_parquet(run_dir / "trials.parquet")

    # one summary row per trial: 2 tune trials (constant grid) + 5 arms x 2 seeds
    assert sorted(trials.groupby("phase").size().items()) == [("eval", 10), ("tune", 2)]
    assert trials["trial_id"].is_unique
    assert (trials.groupby("arm")["seed"].apply(lambda s: sorted(s[trials.loc[s.index, "phase"] == "eval"])) .tolist()
            == [[0, 1]] * 5)
    # steps/eval_every rows per trial, steps 20, 40, 60, no duplicates
    per_trial = steps.groupby("trial_id")["step"].apply(list)
    assert set(per_trial.index) == set(trials["trial_id"])
    assert all(s == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY)) for s in per_trial)
    # the final row of each trial's steps is its summary's final validation loss
    last = steps.sort_values("step").groupby("trial_id").last()
    merged = trials.merge(last.reset_index(), on="trial_id", suffixes=("", "_step"))
    assert (merged["final_val_loss"] == merged["val_loss"]).all()
    assert (trials["steps_done"] == STEPS).all() and not trials["diverged"].any()

    # the eval constant arm uses the tune winner: the grid point with the lower final val loss
    tune = trials[trials["phase"] == "tune"]
    best = json.loads(tune.loc[tune["final_val_loss"].idxmin(), "params"])
    eval_constant = trials[(trials["phase"] == "eval") & (trials["arm"] == "constant")]
    assert {json.loads(p)["lr"] for p in eval_constant["params"]} == {best["lr"]}
    # cosine's total_steps defaults to the task's steps; lr of the last step is the schedule's
    cos = steps[(steps["arm"] == "cosine") & (steps["step"] == STEPS)]
    assert cos["lr"].to_numpy() == pytest.approx(0.003 * 0.5 * (1 + math.cos(math.pi * (STEPS - 1) / STEPS)))

    for name in ("report.md", "report.html", "val_loss.png", "lr.png", "config.json"):
        assert (run_dir / name).exists(), name
    assert any("phase eval" in line for line in lines) and any("tensorboard --logdir" in line for line in lines)
    assert list((run_dir / "eval").rglob("events.out.tfevents*")), "Tune should write TensorBoard event files"


@pytest.mark.slow
def test_failed_trial_retries_from_its_checkpoint(ray_local, tmp_path):
    """A trial that fails once at step 60 restarts from its step-40 checkpoint and ends as if never failed."""
    from ray import tune

    from lrservice.compare.arms import trial_spec
    from lrservice.compare.experiment import run_experiment
    from lrservice.compare.trainable import trial_trainable

    config = _config(tmp_path, checkpoint_every=40)
    config = config.replace(task={"steps": 80})
    arm = config.compare.arms[3]  # cyclic: scheduler state must survive the restart
    spec = trial_spec(config, "r", "eval", arm, [(arm.params, 7)])
    marker = tmp_path / "failed-once"
    failing = {**spec, "fail_once": {"at_step": 60, "marker": str(marker)}}
    trainable, _ = trial_trainable(config.resources)
    (tmp_path / "run").mkdir()
    rows = run_experiment("retry", tmp_path / "run", {"spec": tune.grid_search([failing])}, trainable, config,
                          resume=False, log=print)
    assert marker.read_text() == "60"
    assert len(rows) == 1
    # what the driver received, as it arrived: 20, 40, (60 when it beat the crash), then 60, 80 again
    # from the step-40 checkpoint. Tune's own result.json may lose the reports before the retry.
    recorded = [json.loads(l) for l in (tmp_path / "run" / "parts" / "retry.reports.jsonl").read_text().splitlines()]
    seen = [r["step"] for r in recorded]
    assert seen[:2] == [20, 40] and seen[-2:] == [60, 80] and seen.count(60) in (1, 2), seen
    assert recorded[-1]["training_iteration"] > 0
    reference = record_child(spec)
    assert rows[0]["final_val_loss"] == reference[-1]["val_loss"]
    assert rows[0]["test_loss"] == reference[-1]["test_loss"]
    steps = pd.read_parquet(tmp_path / "run" / "parts" / "retry.steps.parquet")
    assert steps["step"].tolist() == [20, 40, 60, 80]
    assert steps["lr"].tolist() == [r["lr"] for r in reference]
