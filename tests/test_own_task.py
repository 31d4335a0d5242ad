"""A user's own model and data: task plugins through the one door, checked before any work.

The plugin package is written into a temporary directory *outside* the repository and found
through ``task.plugin_dirs`` (filled with the config file's directory when the config loads).
Malformed plugins go through the real CLI (one ``lrservice:`` line naming the field, Ray never
reached); a good plugin goes through every command end to end (slow tests).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from lrservice.child.data import child_data, load_dataset
from lrservice.child.observer import output_layer
from lrservice.child.tasks import check_task
from lrservice.child.trainer import ChildTrainer, load_task_data
from lrservice.config import ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "owntask_plugin"

# A user's package: a model factory and loaders that are not lrservice's, plus broken variants.
PLUGIN = textwrap.dedent('''
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset


    def blobs(n, seed, dim=6, classes=3):
        rng = np.random.default_rng(seed)
        centres = np.random.default_rng(99).normal(0, 2.0, size=(classes, dim))
        y = rng.integers(0, classes, size=n)
        return (centres[y] + rng.normal(0, 1.0, size=(n, dim))).astype(np.float32), y


    def load(root, n=400, classes=3):
        x, y = blobs(n, 0, classes=classes)
        xt, yt = blobs(200, 1, classes=classes)
        return {"train": (x, y), "test": (xt, yt)}


    def load_dataset_objects(root):
        x, y = blobs(400, 0)
        xt, yt = blobs(200, 1)
        return {"train": TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                "val": TensorDataset(torch.from_numpy(xt[:100]), torch.from_numpy(yt[:100])),
                "test": (xt[100:], yt[100:]), "num_classes": 3}


    def load_regression(root):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(300, 4)).astype(np.float32)
        w = np.arange(1, 5, dtype=np.float32)[:, None]
        return {"train": (x[:200], x[:200] @ w), "test": (x[200:], x[200:] @ w)}


    class Net(nn.Module):
        def __init__(self, input_shape, num_classes, width=16):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), width), nn.Tanh())
            self.out = nn.Linear(width, num_classes)   # not called head: the last weighted layer is used

        def forward(self, x):
            return self.out(self.body(x))


    def mse(outputs, targets):
        return torch.nn.functional.mse_loss(outputs, targets)


    # broken variants, one defect each
    def factory_raises(input_shape, num_classes, **model_args):
        raise RuntimeError("no GPU kernels for this layer")


    def factory_not_module(input_shape, num_classes, **model_args):
        return 42


    def factory_wrong_width(input_shape, num_classes, **model_args):
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes + 4))


    def load_no_train(root):
        x, y = blobs(100, 0)
        return {"training": (x, y), "test": (x, y)}


    def load_mismatched(root):
        x, y = blobs(100, 0)
        return {"train": (x, y[:90]), "test": (x, y)}


    def load_float_labels(root):
        x, y = blobs(100, 0)
        return {"train": (x, y + 0.5), "test": (x, y)}


    def load_label_out_of_range(root):
        x, y = blobs(100, 0)
        return {"train": (x, y), "test": (x, y), "num_classes": 2}


    def load_not_mapping(root):
        return [1, 2, 3]


    def load_raises(root):
        raise FileNotFoundError("/data/blobs.csv")


    def loss_not_scalar(outputs, targets):
        return torch.nn.functional.cross_entropy(outputs, targets, reduction="none")

    NOT_CALLABLE = 3
''')


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    """A directory outside the repository holding the user's package."""
    root = tmp_path_factory.mktemp("user-project")
    (root / PACKAGE).mkdir()
    (root / PACKAGE / "__init__.py").write_text(PLUGIN)
    assert ROOT not in root.parents
    return root


def _task(plugin_dir: Path, **fields) -> dict:
    base = {"dataset": f"{PACKAGE}:load", "model": f"{PACKAGE}:Net", "model_args": {"width": 12}, "val_size": 80,
            "batch_size": 16, "steps": 40, "eval_every": 20, "val_subset": 64, "device": "cpu",
            "plugin_dirs": [str(plugin_dir)]}
    return {**base, **fields}


# -- the door and its contract, in process -------------------------------------------------------

def test_a_plugin_config_loads_torch_free_and_fills_plugin_dirs_from_the_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"task": {"dataset": "mypkg.data:load", "model": "mypkg.models:Net"}}))
    task = load_config(path).task
    assert task.plugins == ("dataset", "model")
    assert task.plugin_dirs == tuple(dict.fromkeys([str(tmp_path.resolve()), str(Path.cwd().resolve())]))
    assert load_config(path).task.plugin_dirs == task.plugin_dirs  # stable: a --resume sees the same task
    builtin = config_from_dict({"task": {"dataset": "digits", "model": "mlp"}}).task
    assert builtin.plugins == () and builtin.plugin_dirs == ()


def test_plugin_data_is_split_like_a_builtin(plugin_dir):
    task = config_from_dict({"task": _task(plugin_dir)}).task
    data = load_task_data(task)
    x, y = (torch.as_tensor(v) for v in _user_module(plugin_dir).load(".")["train"])
    order = torch.randperm(400, generator=torch.Generator().manual_seed(0))  # split seed 0, validation first
    assert torch.equal(data.val_x, x[order[:80]]) and torch.equal(data.train_y, y[order[80:]])
    assert data.num_classes == 3 and data.input_shape == (6,) and data.train_x.dtype == torch.float32
    assert check_task(task).startswith(f"task: model {PACKAGE}:Net (")


def test_dataset_objects_and_an_explicit_val_split_are_materialised(plugin_dir):
    task = config_from_dict({"task": _task(plugin_dir, dataset=f"{PACKAGE}:load_dataset_objects")}).task
    data = load_task_data(task)
    module = _user_module(plugin_dir)
    xt, yt = module.blobs(200, 1)
    assert torch.equal(data.val_x, torch.from_numpy(xt[:100])) and torch.equal(data.test_y, torch.from_numpy(yt[100:]))
    assert len(data.train_x) == 400  # the loader's own val: nothing held out of train


def test_a_dataset_split_is_materialised_only_where_it_is_kept():
    seen = []

    class Counting(torch.utils.data.Dataset):
        def __len__(self):
            return 1000

        def __getitem__(self, i):
            seen.append(i)
            return torch.full((3,), float(i)), i % 4

    data = child_data("counting", {"train": Counting(), "test": (torch.zeros(5, 3), torch.arange(5) % 4)},
                      val_size=10, max_train_samples=20)
    assert len(seen) == 30 and len(data.train_x) == 20 and len(data.val_x) == 10
    assert sorted(data.train_x[:, 0].long().tolist() + data.val_x[:, 0].long().tolist()) == sorted(seen)


def test_output_layer_is_head_or_the_last_weighted_layer(plugin_dir):
    net = _user_module(plugin_dir).Net((6,), 3)
    assert output_layer(net) is net.out
    conv = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv1d(4, 2, 1), torch.nn.Flatten())
    assert output_layer(conv) is conv[2]  # a conv can be the output layer too
    conv.head = conv[0]
    assert output_layer(conv) is conv[0]  # a layer named head wins


def test_a_custom_loss_without_accuracy_trains_and_reports_no_accuracy(plugin_dir):
    task = config_from_dict({"task": _task(plugin_dir, dataset=f"{PACKAGE}:load_regression", loss=f"{PACKAGE}:mse",
                                           val_size=50)}).task
    assert not task.is_classification
    check_task(task)
    trainer = ChildTrainer(task)
    trainer.reset(0.01, seed=0)
    before = trainer.evaluate("val")
    trainer.train_steps(40)
    after = trainer.evaluate("val")
    x, y = trainer.split("val")
    assert after.loss == pytest.approx(float(torch.nn.functional.mse_loss(trainer.logits(x), y)), rel=1e-6)
    assert after.loss < before.loss and math.isnan(after.accuracy)
    assert trainer.data.num_classes == 1  # a regression head's width: the targets' width


def test_builtins_go_through_the_same_door_unchanged():
    from lrservice.child.data import digits

    d = load_dataset("digits", val_size=5000)
    assert len(d.val_x) == 300  # the built-in's own cap on the validation split
    raw = digits()
    order = torch.randperm(len(raw["train"][0]), generator=torch.Generator().manual_seed(0))
    assert torch.equal(d.val_x, raw["train"][0][order[:300]])


def _user_module(plugin_dir: Path):
    if str(plugin_dir) not in sys.path:
        sys.path.insert(0, str(plugin_dir))
    import importlib

    return importlib.import_module(PACKAGE)


# -- malformed plugins through the real CLI ------------------------------------------------------

BAD = [
    # (id, task fields, text the one stderr line must hold)
    ("no-colon", {"model": "owntask_plugin.Net"}, "task.model: 'owntask_plugin.Net' is not allowed; choose one of"),
    ("bad-syntax", {"dataset": "owntask_plugin:"}, "task.dataset: 'owntask_plugin:' is not allowed"),
    ("missing-module", {"model": "no_such_pkg.models:Net"}, "task.model: module 'no_such_pkg.models'"),
    ("missing-attribute", {"model": f"{PACKAGE}:Missing"},
     f"task.model: module '{PACKAGE}' has no attribute 'Missing'"),
    ("not-callable", {"loss": f"{PACKAGE}:NOT_CALLABLE"}, "task.loss: 'owntask_plugin:NOT_CALLABLE' is a int"),
    ("factory-raises", {"model": f"{PACKAGE}:factory_raises"}, "task.model: factory 'owntask_plugin:factory_raises' "
                                                               "raised RuntimeError: no GPU kernels"),
    ("factory-not-module", {"model": f"{PACKAGE}:factory_not_module"}, "returned a int, not a torch.nn.Module"),
    ("wrong-width", {"model": f"{PACKAGE}:factory_wrong_width"}, "task.model: 'owntask_plugin:factory_wrong_width' "
                                                                 "maps a batch of 2 to shape (2, 7); expected (2, 3)"),
    ("model-args", {"model_args": {"depth": 3}}, "task.model: factory 'owntask_plugin:Net' raised TypeError"),
    ("no-train", {"dataset": f"{PACKAGE}:load_no_train"}, "task.dataset: 'owntask_plugin:load_no_train' returned no "
                                                          "'train' split"),
    ("mismatched", {"dataset": f"{PACKAGE}:load_mismatched"}, "task.dataset: split 'train' has 100 inputs but 90"),
    ("float-labels", {"dataset": f"{PACKAGE}:load_float_labels"},
     "task.dataset: split 'train' labels are not integers"),
    ("label-range", {"dataset": f"{PACKAGE}:load_label_out_of_range"}, "labels in [0, 2], outside [0, 1]"),
    ("not-mapping", {"dataset": f"{PACKAGE}:load_not_mapping"}, "returned a list, not a mapping"),
    ("loader-raises", {"dataset": f"{PACKAGE}:load_raises"}, "task.dataset: loader 'owntask_plugin:load_raises' "
                                                             "raised FileNotFoundError"),
    ("val-too-big", {"val_size": 400}, "has only 400 training samples, too few to hold out task.val_size=400"),
    ("loss-not-scalar", {"loss": f"{PACKAGE}:loss_not_scalar"}, "task.loss: 'owntask_plugin:loss_not_scalar' must "
                                                                "return a scalar tensor"),
]


def _cli_env() -> dict:
    return {**os.environ, "RAY_ADDRESS": "127.0.0.1:1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def bad_outcomes(plugin_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-plugins")

    def run(case):
        case_id, fields, _ = case
        where = root / case_id
        where.mkdir()
        task = {k: v for k, v in _task(plugin_dir, **fields).items() if k != "plugin_dirs"}
        (where / PACKAGE).symlink_to(plugin_dir / PACKAGE)  # found beside the config file
        config = {"task": task, "compare": {"name": "bad", "output_dir": str(where / "out"), "tune_seeds": [100],
                                            "seeds": [0], "arms": [{"name": "c", "kind": "constant",
                                                                    "params": {"lr": 0.01}}]}}
        (where / "c.yaml").write_text(yaml.safe_dump(config))
        return subprocess.run([sys.executable, "-m", "lrservice", "compare", "--config", str(where / "c.yaml")],
                              cwd=root, env=_cli_env(), capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return root, dict(zip((c[0] for c in BAD), pool.map(run, BAD)))


def test_at_least_ten_distinct_malformed_plugins():
    assert len(BAD) >= 10 and len({c[0] for c in BAD}) == len(BAD)


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_a_malformed_plugin_is_one_line_naming_the_field_before_ray(bad_outcomes, case):
    root, done = bad_outcomes
    result = done[case[0]]
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("lrservice: invalid config: task."), result.stderr
    assert case[2] in lines[0], lines[0]
    assert "Ray" not in result.stdout + result.stderr and not (root / case[0] / "out").exists()


def test_the_base_of_the_malformed_cases_passes(plugin_dir):
    assert "3 classes" in check_task(config_from_dict({"task": _task(plugin_dir)}).task)


def test_check_task_names_a_multitask_entry(plugin_dir):
    from lrservice.preflight import check_tasks

    bad = _task(plugin_dir, model=f"{PACKAGE}:factory_wrong_width")
    config = config_from_dict({"controller": {"tasks": [{"dataset": "digits"}, bad]}})
    with pytest.raises(ConfigError, match=r"^controller\.tasks\[1\]\.model: "):
        check_tasks(config)


# -- a plugin task through every command, real CLI ------------------------------------------------

def _lrservice(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run([sys.executable, "-m", "lrservice", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, f"lrservice {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_a_plugin_task_goes_through_every_command(plugin_dir, tmp_path):
    project = tmp_path / "project"  # the user's project: their package beside their config, outside the repo
    project.mkdir()
    (project / PACKAGE).symlink_to(plugin_dir / PACKAGE)
    out = tmp_path / "out"
    task = {k: v for k, v in _task(plugin_dir).items() if k != "plugin_dirs"}
    config = {
        "task": task,
        "controller": {"action_every": 10, "train_batch_size": 100, "minibatch_size": 50, "num_epochs": 1,
                       "iterations": 1, "checkpoint_every": 1, "num_env_runners": 1, "num_envs_per_env_runner": 2},
        "compare": {"name": "own", "output_dir": str(out), "tune_seeds": [100], "seeds": [0, 1],
                    "max_concurrent_trials": 2, "checkpoint_every": 20, "target_accuracy": 0.5, "arms": [
                        {"name": "constant", "kind": "constant", "grid": {"lr": [0.003, 0.03]}},
                        {"name": "cosine", "kind": "cosine", "params": {"lr": 0.01}},
                        {"name": "cos-zoo", "kind": "policy",
                         "params": {"name": "COS", "k0": 0.0, "k1": 0.01, "l": 40}},
                        {"name": "controller", "kind": "controller",
                         "params": {"checkpoint": "pretrained:digits-mlp", "lr": 0.003}},
                        {"name": "pbt", "kind": "pbt", "params": {"population": 4, "interval": 20}}]},
        "evaluate": {"tune_seeds": [100], "seeds": [1000, 1001], "constant_grid": [0.003, 0.03],
                     "cosine_grid": [0.01], "initial_lrs": [0.01], "output_dir": str(out / "evaluate")},
        "recommend": {"name": "own-rec", "output_dir": str(out), "target_accuracy": 0.5, "budget": 40,
                      "num_samples": 2, "top_k": 1, "verify_seeds": [11], "lr_scales": [0.1],
                      "num_composites": 1, "compose_fractions": [0.5]},
        "resources": {"num_cpus": 2},
    }
    (project / "c.yaml").write_text(yaml.safe_dump(config))
    cwd = tmp_path  # neither the repository nor the project: the package is found beside the config file

    compared = _lrservice(["compare", "--config", str(project / "c.yaml")], cwd)
    assert f"task: model {PACKAGE}:Net" in compared.stdout  # the contract check's line, before Ray
    run_dir = out / "own"
    trials = pd.read_parquet(run_dir / "trials.parquet")
    steps = pd.read_parquet(run_dir / "steps.parquet")
    evaluated = trials[trials.phase == "eval"]
    assert set(evaluated.arm) == {"constant", "cosine", "cos-zoo", "controller", "pbt"}
    assert set(evaluated[evaluated.arm == "controller"].seed) == {0, 1}
    assert evaluated.test_accuracy.between(0, 1).all() and not evaluated.diverged.any()
    assert set(steps.trial_id) == set(trials.trial_id) and set(steps.step) == {20, 40}
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents*"))
    _lrservice(["report", str(run_dir)], cwd)
    assert "controller" in (run_dir / "report.md").read_text()

    _lrservice(["train-controller", "--config", str(project / "c.yaml"), "--output", str(out / "ctrl")], cwd)
    assert (out / "ctrl" / "controller.pt").is_file()
    assert len(pd.read_parquet(out / "ctrl" / "training_log.parquet")) == 1

    _lrservice(["evaluate-controller", "--config", str(project / "c.yaml"), "--controller", f"mine={out / 'ctrl'}",
                "--controller", "digits=pretrained:digits-mlp"], cwd)
    runs = pd.read_parquet(out / "evaluate" / "runs.parquet")
    assert {"mine", "digits", "constant", "cosine"} <= set(runs.arm)
    assert set(runs.seed) == {1000, 1001} and runs.val_loss.map(math.isfinite).all()

    _lrservice(["recommend", "--config", str(project / "c.yaml")], cwd)
    assert (out / "own-rec" / "recommended.yaml").is_file()


# -- a plugin task through the Python API ------------------------------------------------------------

def test_the_python_api_evaluates_controllers_on_a_plugin_task(plugin_dir, tmp_path):
    import lrservice

    lines: list[str] = []
    result = lrservice.evaluate_controller(
        {"task": _task(plugin_dir), "evaluate": {"tune_seeds": [100], "seeds": [1000, 1001],
                                                 "constant_grid": [0.003, 0.03], "cosine_grid": [0.01],
                                                 "initial_lrs": [0.01], "rivals": []}},
        {"digits": "pretrained:digits-mlp"}, output_dir=tmp_path / "eval", log=lines.append)
    assert any(line.startswith(f"[lrservice] task: model {PACKAGE}:Net") for line in lines)
    assert set(result.runs.arm) == {"constant", "cosine", "digits"} and set(result.runs.seed) == {1000, 1001}
    assert result.runs.equals(pd.read_parquet(tmp_path / "eval" / "runs.parquet"))
    with pytest.raises(ConfigError, match=r"^task\.model: factory 'owntask_plugin:factory_raises' raised"):
        lrservice.evaluate_controller({"task": _task(plugin_dir, model=f"{PACKAGE}:factory_raises")},
                                      {"digits": "pretrained:digits-mlp"}, output_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_the_python_api_compares_arms_on_a_plugin_task(plugin_dir, tmp_path):
    import lrservice

    result = lrservice.compare({"task": _task(plugin_dir), "resources": {"num_cpus": 2},
                                "compare": {"name": "api", "output_dir": str(tmp_path), "seeds": [0, 1],
                                            "report": False, "arms": [
                                                {"name": "cosine", "kind": "cosine", "params": {"lr": 0.01}},
                                                {"name": "ctrl", "kind": "controller",
                                                 "params": {"checkpoint": "pretrained:digits-mlp", "lr": 0.003}}]}},
                               log=lambda line: None)
    assert sorted(zip(result.trials.arm, result.trials.seed)) == [("cosine", 0), ("cosine", 1),
                                                                  ("ctrl", 0), ("ctrl", 1)]
    assert set(result.steps.step) == {20, 40} and result.trials.test_accuracy.between(0, 1).all()


def test_plugin_children_train_batched_as_separate_children_do(plugin_dir):
    """A plugin model and a plugin loss (regression) in one batched pool: the same losses as K separate
    children within the batched contract's float32 tolerance (tests/test_batched.py: rtol 1e-4)."""
    from lrservice.child.pool import SeparateChildren, child_pool

    task = config_from_dict({"task": _task(plugin_dir, dataset=f"{PACKAGE}:load_regression", loss=f"{PACKAGE}:mse",
                                           val_size=50)}).task
    data = load_task_data(task)
    pools = [child_pool(task, 3, data=data), SeparateChildren(task, 3, data=data)]
    assert pools[0].mode == "batched (vmap)"
    for pool in pools:
        for i, lr in enumerate([0.003, 0.01, 0.03]):
            pool.reset_child(i, lr, seed=i)
        pool.train_steps(10)
    batched, separate = (pool.evaluate("val") for pool in pools)
    assert [e.loss for e in batched] == pytest.approx([e.loss for e in separate], rel=1e-4)
    assert all(math.isnan(e.accuracy) for e in batched + separate)
