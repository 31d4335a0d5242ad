"""``ray job submit`` to a real head started with ``ray start`` and token auth on
(``RAY_AUTH_MODE=token``, token in ``RAY_AUTH_TOKEN``): the job runs ``lrservice compare``
from an uploaded working dir and writes Parquet to an absolute output dir; clients
without the token (or with a wrong one) are refused."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port, process_tree

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
pytestmark = pytest.mark.slow


def _naming(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if text in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


class TokenHead:
    """``ray start --head --block`` on free 127.0.0.1 ports, in its own temp dir and HOME,
    with token auth on. ``stop()`` SIGKILLs exactly its process tree (never ``ray stop``,
    which would end every Ray instance on the host)."""

    def __init__(self, workdir: Path):
        self.tmp = Path(tempfile.mkdtemp(prefix="lrs-head-"))  # short: socket path limit
        self.token = secrets.token_hex(16)
        self.ports = {name: free_port() for name in (
            "port", "dashboard-port", "node-manager-port", "object-manager-port", "ray-client-server-port",
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
            "metrics-export-port")}
        self.url = f"http://127.0.0.1:{self.ports['dashboard-port']}"
        home = workdir / "home"
        home.mkdir()
        base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        base.update(HOME=str(home), PYTHONUNBUFFERED="1", RAY_DEDUP_LOGS="0",
                    PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        self.env_without_token = base
        self.env = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "head.log"

    def start(self, timeout: float = 90) -> None:
        cmd = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
               "--include-dashboard=true", "--num-cpus=2", "--num-gpus=0", f"--temp-dir={self.tmp}",
               "--disable-usage-stats", "--min-worker-port=0", "--max-worker-port=0"]
        cmd += [f"--{name}={port}" for name, port in self.ports.items()]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            if self.http("/api/jobs/", token=self.token)[0] == 200:
                return
            time.sleep(0.5)
        raise TimeoutError(f"the head's job API did not come up: {self.log.read_text()[-3000:]}")

    def http(self, path: str, token: str | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError as exc:
            return 0, str(exc)

    def ray_cli(self, *args: str, token: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], env=self.env if token else self.env_without_token,
                              capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        pids: set[int] = set(_naming(str(self.tmp)))
        if self.proc is not None:
            pids.update(process_tree(self.proc.pid))
        for pid in pids:
            for extra in process_tree(pid):
                pids.add(extra)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    head = TokenHead(tmp_path_factory.mktemp("head"))
    try:
        head.start()
        yield head
    finally:
        head.stop()


def test_clients_without_the_token_are_refused(token_head):
    assert token_head.http("/api/jobs/")[0] == 401                      # no token
    assert token_head.http("/api/jobs/", token="wrong")[0] == 403       # wrong token
    status, body = token_head.http("/api/jobs/", token=token_head.token)
    assert status == 200 and isinstance(json.loads(body), list)

    refused = token_head.ray_cli("job", "list", "--address", token_head.url, token=False, timeout=120)
    assert refused.returncode != 0
    assert "Missing authentication token" in refused.stderr or "Unauthorized" in refused.stderr


TINY_COMPARE = """\
task: {{dataset: digits, model: mlp, batch_size: 32, steps: 60, val_subset: 64, eval_every: 20}}
compare:
  name: job
  arms:
    - {{name: constant, kind: constant, params: {{lr: 0.01}}}}
  seeds: [0]
  target_accuracy: 0.5
  max_failures: 0
  output_dir: {output_dir}
resources: {{num_cpus: 2, cpus_per_trial: 1}}
"""


def test_job_submit_runs_lrservice_compare_with_token_auth(token_head, tmp_path):
    """The documented command, verbatim: ray job submit --working-dir . -- lrservice compare --config ..."""
    output_dir = tmp_path / "results"  # absolute: the entrypoint runs in a temporary unpacked copy
    workdir = tmp_path / "working_dir"
    # What `--working-dir .` uploads (Ray skips what .gitignore lists); a virtualenv in the checkout
    # (README: .venv, GBs with torch) is not copied: the copy alone took minutes in CI.
    shutil.copytree(ROOT, workdir, ignore=shutil.ignore_patterns(".git", "results", "__pycache__", "*.egg-info",
                                                                 ".pytest_cache", "data", ".benchmarks", ".whl", ".gl",
                                                                 ".venv", "venv"))
    (workdir / "job.yaml").write_text(TINY_COMPARE.format(output_dir=output_dir))
    run = token_head.ray_cli("job", "submit", "--address", token_head.url, "--working-dir", str(workdir),
                             "--submission-id", "lrs-compare", "--", "lrservice", "compare", "--config", "job.yaml",
                             "--no-report")
    logs = token_head.ray_cli("job", "logs", "--address", token_head.url, "lrs-compare").stdout
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    code, body = token_head.http("/api/jobs/lrs-compare", token=token_head.token)
    assert code == 200 and json.loads(body)["status"] == "SUCCEEDED"
    assert "[lrservice]" in logs
    run_dir = output_dir / "job"  # compare.output_dir / compare.name
    assert (run_dir / "trials.parquet").is_file(), f"no Parquet under {run_dir}; job log:\n{logs[-3000:]}"
    import pandas as pd

    trials = pd.read_parquet(run_dir / "trials.parquet")
    steps = pd.read_parquet(run_dir / "steps.parquet")
    assert trials["arm"].tolist() == ["constant"] and trials["steps_done"].tolist() == [60]
    assert steps["step"].tolist() == list(range(20, 61, 20))   # task.eval_every=20 up to task.steps=60
    assert steps["lr"].tolist() == pytest.approx([0.01] * 3)     # the constant arm's lr
    assert not list(token_head.tmp.rglob("trials.parquet"))     # nothing landed in the job's temp working dir


TINY_CONTROLLER = """\
task: {dataset: digits, model: mlp, batch_size: 32, steps: 30, val_subset: 64}
controller: {action_every: 10, iterations: 1, train_batch_size: 30, minibatch_size: 15, num_epochs: 1,
             num_env_runners: 0, checkpoint_every: 1}
"""


def test_job_submit_runs_lrservice_train_controller(token_head, tmp_path):
    """``ray job submit -- lrservice train-controller`` with an absolute --output on shared storage."""
    workdir = tmp_path / "working_dir"
    workdir.mkdir()
    (workdir / "controller.yaml").write_text(TINY_CONTROLLER)
    output = tmp_path / "controller"
    run = token_head.ray_cli("job", "submit", "--address", token_head.url, "--working-dir", str(workdir),
                             "--submission-id", "lrs-controller", "--", "lrservice", "train-controller",
                             "--config", "controller.yaml", "--output", str(output))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    code, body = token_head.http("/api/jobs/lrs-controller", token=token_head.token)
    assert code == 200 and json.loads(body)["status"] == "SUCCEEDED"
    import pandas as pd

    log = pd.read_parquet(output / "training_log.parquet")
    assert len(log) == 1  # controller.iterations
    assert sorted(p.name for p in (output / "checkpoints").glob("iter_*")) == ["iter_000001"]
    assert "[lrservice] controller checkpoint:" in run.stdout


USER_PACKAGE = '''\
import numpy as np
from torch import nn


def load(root):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2.0, size=(3, 5))
    y = rng.integers(0, 3, size=300)
    x = (centres[y] + rng.normal(0, 1.0, size=(300, 5))).astype(np.float32)
    return {"train": (x[:200], y[:200]), "test": (x[200:], y[200:])}


def net(input_shape, num_classes, width=8):
    return nn.Sequential(nn.Linear(input_shape[0], width), nn.ReLU(), nn.Linear(width, num_classes))
'''

PLUGIN_COMPARE = """\
task: {{dataset: "userpkg:load", model: "userpkg:net", model_args: {{width: 12}}, batch_size: 16, steps: 40,
        val_size: 50, val_subset: 32, eval_every: 20}}
compare:
  name: plugin-job
  arms:
    - {{name: cosine, kind: cosine, params: {{lr: 0.01}}}}
  seeds: [0, 1]
  target_accuracy: 0.5
  max_failures: 0
  output_dir: {output_dir}
resources: {{num_cpus: 2, cpus_per_trial: 1}}
"""


def test_job_submit_runs_a_plugin_task_from_the_users_working_dir(token_head, tmp_path):
    """A user's project (their package beside their config, not in lrservice) as the job's working dir."""
    workdir = tmp_path / "user_project"
    (workdir / "userpkg").mkdir(parents=True)
    (workdir / "userpkg" / "__init__.py").write_text(USER_PACKAGE)
    output_dir = tmp_path / "results"
    (workdir / "config.yaml").write_text(PLUGIN_COMPARE.format(output_dir=output_dir))
    run = token_head.ray_cli("job", "submit", "--address", token_head.url, "--working-dir", str(workdir),
                             "--submission-id", "lrs-plugin", "--", "lrservice", "compare", "--config", "config.yaml",
                             "--no-report")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    code, body = token_head.http("/api/jobs/lrs-plugin", token=token_head.token)
    assert code == 200 and json.loads(body)["status"] == "SUCCEEDED"
    assert "[lrservice] task: model userpkg:net (" in run.stdout  # checked on the head before the trials
    import pandas as pd

    trials = pd.read_parquet(output_dir / "plugin-job" / "trials.parquet")
    assert sorted(trials["seed"]) == [0, 1] and (trials["steps_done"] == 40).all()
    assert trials["test_accuracy"].between(0, 1).all()
