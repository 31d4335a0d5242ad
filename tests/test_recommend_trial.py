"""A recommend run is a compare child: same runner, same rows, same final metrics under the same names.

Both run without Tune: :func:`lrservice.recommend.trial.run_child` with a recording callback and
a compare trial of one ``policy`` child (``run_trial`` through ``helpers.record_child``), on the
same task, policy and seed. Every row and every final metric must agree exactly, and so must
every column the two commands' tables share.
"""

from __future__ import annotations

import math

from helpers import record_child

from lrservice.compare.arms import trial_spec
from lrservice.compare.results import TRIALS_SCHEMA
from lrservice.compare.results import rows_from_reports as compare_rows_from_reports
from lrservice.compare.trainable import child_spec
from lrservice.config import ArmConfig, config_from_dict
from lrservice.recommend.output import RUNS_SCHEMA, STEPS_SCHEMA
from lrservice.recommend.search import FINAL_METRICS
from lrservice.recommend.search import rows_from_reports as recommend_rows_from_reports
from lrservice.recommend.trial import run_child
from lrservice.schedules import policy_from_dict

TASK = {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": 40, "eval_every": 10}
POLICY = {"compose": [{"name": "TRI", "k0": 1e-4, "k1": 1e-2, "l": 10},
                      {"name": "COS", "k0": 0.0, "k1": 3e-3, "l": 20}], "boundaries": [20]}
SEED = 5
TARGET = 0.5


def _both(task: dict, policy: dict, budget: int):
    config = config_from_dict({"task": task, "compare": {"target_accuracy": TARGET}})
    spec = trial_spec(config, "r", "eval", ArmConfig("p", "policy", params=policy), [(policy, SEED)])
    theirs = record_child(spec)
    mine: list[dict] = []
    last = run_child(config.task, policy, SEED, budget, TARGET, mine.append)
    return spec, theirs, mine, last


def test_recommend_run_equals_compare_child():
    spec, theirs, mine, last = _both(TASK, POLICY, budget=TASK["steps"])
    policy = policy_from_dict(POLICY)
    assert [r["step"] for r in mine] == [r["step"] for r in theirs] == [10, 20, 30, 40]
    for row, other in zip(mine, theirs):
        assert row["lr"] == policy(row["step"] - 1)  # the LR the row's last step used
        for key in ("train_loss", "val_loss", "val_accuracy", "lr", "final"):
            assert row[key] == other[key], (row["step"], key)
    assert last == mine[-1] and last["final"] and not last["diverged"]
    for key in (*FINAL_METRICS, "steps_done", "steps_to_target", "diverged", "target_accuracy"):
        assert last[key] == theirs[-1][key], key
    assert math.isfinite(last["test_loss"]) and 0 < last["test_accuracy"] <= 1

    # the tables: every column both commands write has the same value
    run = {"candidate": "p", "label": "p", "policy": POLICY, "seed": SEED, "scale": 1.0}
    steps, row = recommend_rows_from_reports("verify", run, "t", mine, TARGET)
    _, trial = compare_rows_from_reports(child_spec(spec, 0), "t.c0", theirs, wall_s=None)
    shared = set(RUNS_SCHEMA.names) & set(TRIALS_SCHEMA.names) - {"trial_id", "seconds_to_target"}
    assert {"final_val_loss", "final_val_accuracy", "test_loss", "test_accuracy", "top5_accuracy",
            "train_test_loss_gap", "steps_done", "steps_to_target"} <= shared
    for name in shared:
        assert row[name] == trial[name], name
    assert row["completed"] and row["final_val_loss"] == theirs[-1]["val_loss"]
    assert [s["val_loss"] for s in steps] == [r["val_loss"] for r in theirs]
    assert set(STEPS_SCHEMA.names) - {"stage", "candidate", "seed", "scale", "trial_id"} <= set(theirs[0])


def test_budget_replaces_task_steps():
    """The recommender trains ``budget`` steps, whatever ``task.steps`` says: the same child as compare's at 40."""
    _, theirs, _, _ = _both(TASK, POLICY, budget=TASK["steps"])
    long_task = config_from_dict({"task": {**TASK, "steps": 1000}}).task
    mine: list[dict] = []
    last = run_child(long_task, POLICY, SEED, TASK["steps"], TARGET, mine.append)
    assert [r["step"] for r in mine] == [10, 20, 30, 40] and last["steps_done"] == 40 and not last["diverged"]
    assert [r["val_loss"] for r in mine] == [r["val_loss"] for r in theirs]
    assert last["test_loss"] == theirs[-1]["test_loss"]


def test_a_diverged_run_stops_with_its_final_report():
    task = {**TASK, "optimizer": "sgd"}
    policy = {"name": "FIX", "k0": 1e6}
    _, theirs, mine, last = _both(task, policy, budget=task["steps"])
    assert mine[-1] is last and last["diverged"] and last["final"]
    assert all(not r["final"] for r in mine[:-1]) and last["step"] < task["steps"]
    assert last["val_loss"] == math.inf  # ASHA's metric: a diverged child is the worst
    assert [r["step"] for r in mine] == [r["step"] for r in theirs] and theirs[-1]["diverged"]
    run = {"candidate": "x", "label": "x", "policy": policy, "seed": SEED, "scale": 1.0}
    _, row = recommend_rows_from_reports("search", run, "t", mine, TARGET)
    assert row["diverged"] and not row["completed"] and row["final_val_accuracy"] == 0.0
