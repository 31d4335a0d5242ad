"""Resume after the driver process is killed: `lrservice compare --resume` loses and duplicates no rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

STEPS, EVAL_EVERY = 200, 20
ARMS = [  # two tune trials (a batch of grid points x tune seeds each), then two eval trials
    {"name": "constant", "kind": "constant", "grid": {"lr": [0.0003, 0.001, 0.003, 0.01]}},
    {"name": "cosine", "kind": "cosine", "grid": {"lr": [0.003, 0.01]}},
]


def _finished(run_dir: Path) -> dict[str, int]:
    """trial dir name -> number of final reports, for every trial of every experiment so far."""
    out = {}
    for result in run_dir.glob("*/*/result.json"):
        lines = [json.loads(l) for l in result.read_text().splitlines() if l.strip()]
        out[f"{result.parent.parent.name}/{result.parent.name}"] = sum(1 for l in lines if l.get("final"))
    return out


def _cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lrservice", "compare", "--config", str(config), "--no-report", *extra]


@pytest.mark.slow
def test_resume_after_driver_is_killed(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "task": {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": STEPS, "eval_every": EVAL_EVERY,
                 "val_subset": 128},
        "compare": {"name": "killed", "output_dir": str(tmp_path), "tune_seeds": [100, 101], "seeds": [0, 1],
                    "max_concurrent_trials": 2, "checkpoint_every": 60, "arms": ARMS},
        "resources": {"num_cpus": 2},
    }))
    run_dir = tmp_path / "killed"
    env = {**os.environ, "LRSERVICE_DASHBOARD": "0", "RAY_DEDUP_LOGS": "0"}
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(_cmd(config), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            done = [k for k, n in _finished(run_dir).items() if n and k.startswith("tune/")]
            snapshot = any((run_dir / "tune").glob("experiment_state-*.json"))
            if len(done) >= 1 and snapshot:  # Tune resumes from its last state snapshot
                break
            time.sleep(0.5)
        log = (tmp_path / "first.log").read_text()[-3000:]
        assert proc.poll() is None, "the first run ended before it could be killed: " + log
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = _finished(run_dir)
    finished_before = {k for k, n in before.items() if n}
    complete = {p.name.split(".")[0] for p in (run_dir / "parts").glob("*.trials.parquet")}
    assert finished_before and not (run_dir / "steps.parquet").exists()
    time.sleep(2)

    second = subprocess.run(_cmd(config, "--resume"), capture_output=True, text=True, env=env, timeout=400)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-4000:]
    # the interrupted experiment is restored from Tune's last state snapshot, or started again
    # when the driver died before Tune wrote its first one
    assert "restoring the interrupted experiment" in out or "saved no state yet; starting it again" in out

    after = _finished(run_dir)
    for key in finished_before:  # a phase that had completed is skipped: none of its trials ran again
        if key.split("/")[0] in complete:
            assert after[key] == 1, key
    trials = pd.read_parquet(run_dir / "trials.parquet")
    steps = pd.read_parquet(run_dir / "steps.parquet")
    assert sorted(trials.groupby("phase").size().items()) == [("eval", 2 * 2), ("tune", (4 + 2) * 2)]  # child runs
    assert trials["trial_id"].is_unique
    assert not steps.duplicated(["trial_id", "step"]).any()
    counts = steps.groupby("trial_id").size()
    assert set(counts.index) == set(trials["trial_id"]) and (counts == STEPS // EVAL_EVERY).all()
    assert trials["run_id"].nunique() == 1 and steps["run_id"].nunique() == 1

    third = subprocess.run(_cmd(config, "--resume"), capture_output=True, text=True, env=env, timeout=300)
    assert third.returncode == 0, (third.stdout + third.stderr)[-3000:]
    assert "tune: already complete" in third.stdout and "eval: already complete" in third.stdout
    assert pd.read_parquet(run_dir / "trials.parquet").equals(trials)


def test_experiment_killed_before_its_first_snapshot_starts_again(tmp_path):
    """Only tuner.pkl on disk (driver died before Tune's first state snapshot): a fresh start, no restore."""
    from lrservice.compare.experiment import experiment_stage
    from lrservice.config import RunConfig
    from lrservice.stage import tuner as stage_tuner

    path = tmp_path / "tune"
    path.mkdir()
    (path / "tuner.pkl").write_bytes(b"")
    (path / "stale-trial").mkdir()
    lines = []
    stage = experiment_stage("tune", tmp_path, {"x": 1}, lambda config: None, RunConfig())
    tuner = stage_tuner(stage, resume=True, log=lines.append)
    assert lines == ["[lrservice] tune: the interrupted experiment saved no state yet; starting it again"]
    assert not (path / "stale-trial").exists() and tuner is not None
