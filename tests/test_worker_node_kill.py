"""The fault Ray clusters actually see: a whole worker node dies mid-comparison.

The two-node cluster of ``cluster/local-multinode.sh`` (a head and a worker, each ``ray start``
with 1 CPU, token auth on) runs ``lrservice compare --address``. Once a trial (a batch of
children) is training on the worker node, that node's raylet and everything it started are
SIGKILLed. The comparison must finish on the surviving head node — the lost trial retried from
its last checkpoint — with every child's every step in ``steps.parquet`` exactly once and one
summary row per child in ``trials.parquet``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import free_port, process_tree

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cluster" / "local-multinode.sh"
STEPS, EVAL_EVERY = 900, 30
TUNE_SEEDS, SEEDS = [100, 101], [0, 1, 2, 3, 4, 5]
ARMS = [
    {"name": "constant", "kind": "constant", "grid": {"lr": [0.001, 0.003, 0.01]}},
    {"name": "cosine", "kind": "cosine", "grid": {"lr": [0.003, 0.01]}},
    {"name": "step", "kind": "step", "params": {"lr": 0.003, "step_size": 100, "gamma": 0.5}},
]
pytestmark = pytest.mark.slow


def _worker_raylet(tmp: str) -> int:
    """The worker node's raylet: the one of this cluster (its temp dir) holding ``gpu_worker``."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "raylet" in cmd.split("\0")[0] and tmp in cmd and "gpu_worker" in cmd:
                return int(entry)
    raise AssertionError("no worker raylet found")


@pytest.fixture
def two_nodes(tmp_path):
    """The script's cluster on free ports in a private temp dir and HOME (its own token); stopped after."""
    home = tmp_path / "home"
    home.mkdir()
    tmp = tempfile.mkdtemp(prefix="lrs-kill-")
    gcs = free_port()
    env = {**os.environ, "HOME": str(home), "LRS_RAY_TMP": tmp, "LRS_GCS_PORT": str(gcs),
           "LRS_DASHBOARD_PORT": str(free_port()), "LRS_WORKER_AGENT_PORT": str(free_port()),
           "RAY_AUTH_MODE": "token", "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=180)
    try:
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        address = Path(tmp, "ray_current_cluster").read_text().strip()
        yield env, tmp, address
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


def _training_pids(run_dir: Path) -> set[int]:
    """Worker-process pids of trials still training: their last result is not the final one. From the
    driver's record of every result as it arrives (``parts/*.reports.jsonl``; Tune adds ``pid``)."""
    last: dict[str, dict] = {}
    for path in (run_dir / "parts").glob("*.reports.jsonl"):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line being written
            last[row["trial_id"]] = row
    return {int(r["pid"]) for r in last.values() if not r.get("final") and r.get("pid")}


def test_a_worker_node_killed_mid_comparison(two_nodes, tmp_path):
    env, tmp, address = two_nodes
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "task": {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": STEPS, "eval_every": EVAL_EVERY,
                 "val_subset": 128},
        "compare": {"name": "node-kill", "output_dir": str(tmp_path), "tune_seeds": TUNE_SEEDS, "seeds": SEEDS,
                    "max_concurrent_trials": 2, "max_failures": 3, "checkpoint_every": 150, "arms": ARMS},
    }))
    run_dir = tmp_path / "node-kill"
    log_path = tmp_path / "driver.log"
    with log_path.open("w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "lrservice", "compare", "--config", str(config),
                                   "--address", address, "--no-report"], stdout=log, stderr=subprocess.STDOUT,
                                  env={**env, "LRSERVICE_DASHBOARD": "0"}, start_new_session=True)
    try:
        raylet = _worker_raylet(tmp)
        deadline, killed = time.time() + 240, None
        while time.time() < deadline and driver.poll() is None:
            on_worker = _training_pids(run_dir) & set(process_tree(raylet))
            if on_worker:  # a trial is training on the worker node and has reported: kill the whole node
                for pid in process_tree(raylet):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                killed = on_worker
                break
            time.sleep(0.2)
        assert killed, "no trial ran on the worker node before the run ended: " + log_path.read_text()[-3000:]
        driver.wait(600)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    out = log_path.read_text()
    assert driver.returncode == 0, out[-4000:]

    trials = pd.read_parquet(run_dir / "trials.parquet")
    steps = pd.read_parquet(run_dir / "steps.parquet")
    grid = sum(len(a["grid"]["lr"]) for a in ARMS if "grid" in a)
    assert sorted(trials.groupby("phase").size().items()) == [("eval", len(ARMS) * len(SEEDS)),
                                                             ("tune", grid * len(TUNE_SEEDS))]
    assert trials["trial_id"].is_unique and not trials["diverged"].any()
    assert not steps.duplicated(["trial_id", "step"]).any()  # every step once, the retried ones included
    expected = list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    assert set(steps["trial_id"]) == set(trials["trial_id"])
    assert all(sorted(g) == expected for g in steps.groupby("trial_id")["step"].apply(list)), "a child lost a step"
    assert (trials["steps_done"] == STEPS).all()
    # the lost trial really was lost and retried: some trial reported from more than one worker process
    reports = [json.loads(line) for path in (run_dir / "parts").glob("*.reports.jsonl")
               for line in path.read_text().splitlines()]
    pids_per_trial: dict[str, set] = {}
    for r in reports:
        pids_per_trial.setdefault(r["trial_id"], set()).add(r.get("pid"))
    assert any(len(p) > 1 for p in pids_per_trial.values()), "no trial was retried after the node died"
    assert "was lost (failure 1 of 3 allowed" in out and "retrying it from its last checkpoint" in out
