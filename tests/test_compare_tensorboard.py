"""TensorBoard logs: one run per arm and seed with readable names, read back from the event
files, and shown by a real TensorBoard server in a real headless browser."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from lrservice.compare.tensorboard import TAGS, write_tensorboard

ARMS, SEEDS, STEPS = ("constant", "fix-then-cos", "pbt"), (0, 1), (20, 40, 60)


def _steps() -> pd.DataFrame:
    rows = []
    for a, arm in enumerate(ARMS):
        for seed in SEEDS:
            for step in STEPS:
                rows.append({"phase": "eval", "arm": arm, "seed": seed, "step": step, "trial_id": f"{arm}-{seed}",
                             "val_loss": 1.0 / step + a + seed / 10, "train_loss": 2.0 / step,
                             "val_accuracy": step / 100,
                             "lr": 0.01 * (a + 1)})
    rows.append({**rows[0], "phase": "tune", "arm": "constant", "seed": 100})  # tune rows are not runs
    return pd.DataFrame(rows)


def test_event_files_hold_one_run_per_arm_and_seed_with_every_metric(tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    steps = _steps()
    board = write_tensorboard(steps, tmp_path)
    write_tensorboard(steps, tmp_path)  # rewriting replaces, never doubles
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(board))
    mux.Reload()
    runs = mux.Runs()
    assert sorted(runs) == sorted(f"{arm}/seed{s}" for arm in ARMS for s in SEEDS)
    for run, content in runs.items():
        assert sorted(content["scalars"]) == sorted(TAGS)
        arm, seed = run.split("/seed")
        expected = steps[(steps["phase"] == "eval") & (steps["arm"] == arm) & (steps["seed"] == int(seed))]
        events = mux.Scalars(run, "val_loss")
        assert [e.step for e in events] == list(STEPS)
        assert [e.value for e in events] == pytest.approx(expected["val_loss"].tolist(), rel=1e-6)  # float32 in files


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium not installed (Debian: apt-get install -y chromium)")
def test_tensorboard_in_a_headless_browser_shows_every_run(tmp_path):
    """TensorBoard's scalar dashboard, rendered by headless Chromium, lists every ``arm/seedN`` run."""
    board = write_tensorboard(_steps(), tmp_path)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(board), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                runs = urllib.request.urlopen(f"{url}/data/runs", timeout=2).read().decode()
                if "seed" in runs:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("tensorboard did not serve the runs within 60 s")
        shot = tmp_path / "tensorboard.png"
        # swiftshader: software WebGL, so the charts draw their lines without a GPU
        common = ["chromium", "--headless", "--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
                  "--window-size=1366,900",
                  "--virtual-time-budget=15000"]
        dom = subprocess.run([*common, "--dump-dom", f"{url}/#timeseries"], capture_output=True, text=True,
                             timeout=120).stdout
        subprocess.run([*common, f"--screenshot={shot}", f"{url}/#timeseries"], capture_output=True, timeout=120)
    finally:
        server.terminate()
        server.wait(timeout=30)
    for arm in ARMS:
        for seed in SEEDS:
            assert f"{arm}/seed{seed}" in dom, f"{arm}/seed{seed} not in the rendered page"
    for tag in TAGS:
        assert tag in dom
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
