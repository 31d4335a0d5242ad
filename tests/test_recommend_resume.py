"""Resume after the driver is killed before Tune's first experiment-state snapshot.

The killed `lrservice recommend` leaves the search stage's ``tuner.pkl`` alone. Tune would
"restore" that into an empty experiment (no trial configs) and the stage would finish with
no runs; `--resume` must instead start that stage again and finish the whole recommendation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

BUDGET, NUM_SAMPLES = 40, 2

# The real command, with one change: the driver's whole process group (Ray included) is
# SIGKILLed at the moment Tune would write its first experiment-state snapshot.
KILLED_AT_FIRST_SNAPSHOT = """
import os, signal, sys
from ray.tune.execution.tune_controller import TuneController

def die(self, *args, **kwargs):
    os.killpg(0, signal.SIGKILL)

TuneController.checkpoint = die
from lrservice.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _args(config: Path, *extra: str) -> list[str]:
    return ["recommend", "--config", str(config), *extra]


@pytest.mark.slow
def test_recommend_killed_before_first_snapshot_resumes(tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text(yaml.safe_dump({
        "task": {"dataset": "digits", "model": "mlp", "batch_size": 32, "eval_every": 10, "val_subset": 128},
        "recommend": {"name": "killed", "output_dir": str(tmp_path), "budget": BUDGET, "num_samples": NUM_SAMPLES,
                      "top_k": 1, "verify_seeds": [11], "lr_scales": [2.0], "num_composites": 0,
                      "target_accuracy": 0.5},
        "resources": {"num_cpus": 2},
    }))
    run_dir = tmp_path / "killed"
    env = {**os.environ, "LRSERVICE_DASHBOARD": "0", "RAY_DEDUP_LOGS": "0"}

    log = tmp_path / "first.log"
    with log.open("w") as sink:
        first = subprocess.Popen([sys.executable, "-c", KILLED_AT_FIRST_SNAPSHOT, *_args(config)], stdout=sink,
                                 stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        first.wait(timeout=300)
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out = log.read_text()
    assert first.returncode == -signal.SIGKILL, out[-3000:]
    search = run_dir / "search"
    assert (search / "tuner.pkl").exists(), out[-3000:]
    assert not list(search.glob("experiment_state-*.json")) and not (run_dir / "parts").exists()

    second = subprocess.run([sys.executable, "-m", "lrservice", *_args(config, "--resume")], capture_output=True,
                            text=True, env=env, timeout=400)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-4000:]
    assert "search: the interrupted experiment saved no state yet; starting it again" in out
    assert "restoring the interrupted experiment" not in out

    runs = pq.read_table(run_dir / "runs.parquet").to_pandas()
    search_runs = runs[runs.stage == "search"]
    assert len(search_runs) == NUM_SAMPLES + 1 and search_runs.trial_id.is_unique  # sampled policies + FIX
    assert sorted(runs.stage.unique()) == ["search", "verify"]
    assert len(runs[runs.stage == "verify"]) == (1 + 1) * (1 + 1)  # (top_k + FIX) x (seeds + scales)
    assert (run_dir / "recommended.yaml").exists() and (run_dir / "report.md").exists()
