"""Malformed configs through the real CLI: exit code != 0, one stderr line naming the field or
file, and Ray never started.

Each case is a subprocess ``python -m lrservice COMMAND --config FILE``. ``RAY_ADDRESS``
points at a port where no Ray listens: a command that got as far as Ray would hang in
``ray.init`` retries (the subprocess timeout fails the test) or print "could not attach",
and a local Ray cannot start. The valid base config passes every check (tested too), so
each case fails for its own one defect.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lrservice.compare.arms import check_compare
from lrservice.config import load_config
from lrservice.preflight import check_recommend

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "task": {"steps": 40, "eval_every": 20, "batch_size": 16},
    "controller": {"iterations": 1},
    "compare": {"name": "bad-input", "tune_seeds": [100], "seeds": [0, 1],
                "arms": [{"name": "constant", "kind": "constant", "grid": {"lr": [0.01, 0.003]}},
                         {"name": "pbt", "kind": "pbt", "params": {"population": 4, "interval": 20}}]},
}


def _with(path: str, value):
    """BASE with ``value`` at a dotted path (``[i]`` indexes lists); value DELETE removes the key."""
    data = copy.deepcopy(BASE)
    keys = path.replace("[", ".").replace("]", "").split(".")
    node = data
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node.setdefault(k, {})
    last = keys[-1]
    if value is DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return yaml.safe_dump(data)


DELETE = object()
CTRL_ARM = {"name": "ctrl", "kind": "controller", "params": {"checkpoint": "auto"}}

# (id, command, file name, content: str | bytes | None for "do not create", text the line must name)
CASES = [
    ("empty", "compare", "c.yaml", "", "c.yaml is empty"),
    ("only-comments", "compare", "c.yaml", "# nothing here\n\n", "c.yaml is empty"),
    ("yaml-null", "compare", "c.yaml", "---\n", "c.yaml is empty"),
    ("yaml-syntax", "compare", "c.yaml", "task:\n  steps: [40\n  model: mlp\n", "c.yaml is not valid YAML"),
    ("yaml-tab", "compare", "c.yaml", "task:\n\tsteps: 40\n", "c.yaml is not valid YAML"),
    ("binary", "compare", "c.yaml", bytes(range(256)) * 4, "c.yaml is not a text file"),
    ("nul-bytes", "compare", "c.yaml", b"task:\x00\x00\n", "c.yaml is a binary file"),
    ("json-syntax", "compare", "c.json", '{"task": {"steps": 40,}}', "c.json is not valid JSON"),
    ("top-list", "compare", "c.yaml", "- task\n- compare\n", "c.yaml must hold a mapping"),
    ("top-scalar", "compare", "c.yaml", "hello\n", "c.yaml must hold a mapping"),
    ("missing-file", "compare", "nope.yaml", None, "nope.yaml' does not exist"),
    ("directory", "compare", "dir.yaml", "DIR", "dir.yaml' is a directory"),
    ("unknown-section", "compare", "c.yaml", _with("tsk", {"steps": 40}), "tsk: unknown field"),
    ("unknown-task-field", "compare", "c.yaml", _with("task.stepz", 40), "task.stepz: unknown field"),
    ("dataset", "compare", "c.yaml", _with("task.dataset", "imagenet"), "task.dataset: 'imagenet'"),
    ("steps-type", "compare", "c.yaml", _with("task.steps", "many"), "task.steps: 'many'"),
    ("steps-negative", "compare", "c.yaml", _with("task.steps", -40), "task.steps: -40"),
    ("batch-zero", "compare", "c.yaml", _with("task.batch_size", 0), "task.batch_size: 0"),
    ("momentum", "compare", "c.yaml", _with("task.momentum", 1.5), "task.momentum: 1.5"),
    ("steps-vs-eval-every", "compare", "c.yaml", _with("task.steps", 50), "task.steps: 50"),
    ("controller-factor", "compare", "c.yaml", _with("controller.factor", 1.0), "controller.factor: 1.0"),
    ("controller-lr-range", "compare", "c.yaml", _with("controller.lr_min", 0.5), "controller.lr_min: 0.5"),
    ("arms-empty", "compare", "c.yaml", _with("compare.arms", []), "compare.arms: give at least one arm"),
    ("arms-duplicate", "compare", "c.yaml", _with("compare.arms[1]", {"name": "constant", "kind": "cosine"}),
     "compare.arms: arm names must be unique"),
    ("arm-kind", "compare", "c.yaml", _with("compare.arms[0].kind", "wobble"), "compare.arms[0].kind: 'wobble'"),
    ("arm-name", "compare", "c.yaml", _with("compare.arms[0].name", "bad name!"), "compare.arms[0].name: 'bad name!'"),
    ("arm-name-missing", "compare", "c.yaml", _with("compare.arms[0].name", DELETE),
     "compare.arms[0].name: required field is missing"),
    ("grid-not-list", "compare", "c.yaml", _with("compare.arms[0].grid.lr", 0.01), "compare.arms[0].grid.lr: 0.01"),
    ("constant-negative-lr", "compare", "c.yaml", _with("compare.arms[0].grid.lr", [-0.01]), "compare.arms[0].params"),
    ("policy-unknown", "compare", "c.yaml", _with("compare.arms[0]", {"name": "p", "kind": "policy",
                                                                      "params": {"name": "WOBBLE"}}),
     "compare.arms[0].params"),
    ("pbt-population", "compare", "c.yaml", _with("compare.arms[1].params.population", 2),
     "compare.arms[1].params.population: 2"),
    ("pbt-interval-multiple", "compare", "c.yaml", _with("compare.arms[1].params.interval", 30),
     "compare.arms[1].params.interval: 30"),
    ("pbt-interval-vs-steps", "compare", "c.yaml", _with("compare.arms[1].params.interval", 40),
     "compare.arms[1].params.interval: 40"),
    ("wsd-shape", "compare", "c.yaml",
     _with("compare.arms[0]", {"name": "w", "kind": "wsd", "params": {"lr": 0.01, "shape": "cube"}}),
     "compare.arms[0].params.shape: 'cube' is not allowed"),
    ("warmup-too-long", "compare", "c.yaml",
     _with("compare.arms[0]", {"name": "w", "kind": "warmup_cosine", "params": {"lr": 0.01, "warmup": 40}}),
     "compare.arms[0].params.warmup: 40 is not allowed"),
    ("evaluate-rival-kind", "evaluate-controller --controller pretrained:digits-mlp", "c.yaml",
     yaml.safe_dump({"evaluate": {"rivals": [{"name": "p", "kind": "pbt"}]}}),
     "evaluate.rivals[0].kind: 'pbt' is not allowed for a rival"),
    ("evaluate-rival-param", "evaluate-controller --controller pretrained:digits-mlp", "c.yaml",
     yaml.safe_dump({"evaluate": {"rivals": [{"name": "s", "kind": "schedule_free", "grid": {"lr": [0.01, -1]}}]}}),
     "evaluate.rivals[0].params.lr: -1 is not allowed"),
    ("pbt-grid", "compare", "c.yaml", _with("compare.arms[1].grid", {"lr": [0.1]}), "compare.arms[1].grid"),
    ("pbt-unknown-param", "compare", "c.yaml", _with("compare.arms[1].params.lr", 0.1),
     "compare.arms[1].params.lr: unknown key"),
    ("controller-checkpoint-missing", "compare", "c.yaml",
     _with("compare.arms[1]", {"name": "ctrl", "kind": "controller", "params": {"checkpoint": "/nonexistent/ctrl"}}),
     "compare.arms[1].params.checkpoint: /nonexistent/ctrl: no controller checkpoint there"),
    ("controller-checkpoint-not-one", "compare", "c.yaml",
     _with("compare.arms[1]", {"name": "ctrl", "kind": "controller", "params": {"checkpoint": "EMPTYDIR"}}),
     "empty-dir: no controller checkpoint there"),
    ("controller-arm-unknown-param", "compare", "c.yaml",
     _with("compare.arms[1]", {"name": "ctrl", "kind": "controller", "params": {"checkpoint": "auto", "gain": 2}}),
     "compare.arms[1].params.gain: unknown key"),
    ("controller-pretrained-unknown", "compare", "c.yaml",
     _with("compare.arms[1]", {"name": "ctrl", "kind": "controller", "params": {"checkpoint": "pretrained:nope"}}),
     "compare.arms[1].params.checkpoint: pretrained:nope: no such pretrained controller"),
    ("seeds-not-held-out", "compare", "c.yaml", _with("compare.seeds", [0, 100]), "compare.seeds: [100]"),
    ("seeds-empty", "compare", "c.yaml", _with("compare.seeds", []), "compare.seeds: give at least one seed"),
    ("target-accuracy", "compare", "c.yaml", _with("compare.target_accuracy", 1.5), "compare.target_accuracy: 1.5"),
    ("cpus-per-trial", "compare", "c.yaml", _with("resources.cpus_per_trial", -1), "resources.cpus_per_trial: -1"),
    ("recommend-lr-range", "recommend", "c.yaml", _with("recommend", {"base_lr": 1.0, "lr_max": 0.1}),
     "recommend.base_lr: 1.0"),
    ("recommend-metric", "recommend", "c.yaml", _with("recommend.metric", "f1"), "recommend.metric: 'f1'"),
    ("evaluate-seeds-not-held-out", "evaluate-controller --controller pretrained:digits-mlp", "c.yaml",
     yaml.safe_dump({"evaluate": {"tune_seeds": [1, 2], "seeds": [2, 3]}}), "evaluate.seeds: [2] are also tune_seeds"),
    ("evaluate-seeds-flag-tuned-on", "evaluate-controller --controller pretrained:digits-mlp --seeds 99-101", "c.yaml",
     yaml.safe_dump({"evaluate": {"tune_seeds": [100, 101]}}), "evaluate.seeds: [100, 101] are also tune_seeds"),
    ("evaluate-seeds-flag-format", "evaluate-controller --controller pretrained:digits-mlp --seeds 1000..1099",
     "c.yaml",
     yaml.safe_dump({"task": {"steps": 50}}), "--seeds: '1000..1099' is not allowed"),
    ("evaluate-seeds-flag-repeated", "evaluate-controller --controller pretrained:digits-mlp --seeds 7,8,7", "c.yaml",
     yaml.safe_dump({"task": {"steps": 50}}), "evaluate.seeds: [7, 8, 7] is not allowed"),
    ("evaluate-seeds-repeated", "evaluate-controller --controller pretrained:digits-mlp", "c.yaml",
     yaml.safe_dump({"evaluate": {"seeds": [3, 3]}}), "evaluate.seeds: [3, 3] is not allowed"),
    ("evaluate-controller-missing", "evaluate-controller --controller /nonexistent/c.pt", "c.yaml",
     yaml.safe_dump({"task": {"steps": 50}}), "/nonexistent/c.pt: no controller checkpoint there"),
    ("train-controller-ppo-lr-final", "train-controller", "c.yaml", _with("controller.ppo_lr_final", 0.1),
     "controller.ppo_lr_final: 0.1 is not allowed"),
    ("train-controller-entropy-coeff-final", "train-controller", "c.yaml", _with("controller.entropy_coeff_final", 0.1),
     "controller.entropy_coeff_final: 0.1 is not allowed"),
    ("train-controller-clip-param", "train-controller", "c.yaml", _with("controller.clip_param", 0),
     "controller.clip_param: 0.0 is not allowed"),
    ("train-controller-kl-target", "train-controller", "c.yaml", _with("controller.kl_target", 0),
     "controller.kl_target: 0.0 is not allowed"),
    ("train-controller-kl-coeff", "train-controller", "c.yaml", _with("controller.kl_coeff", -0.1),
     "controller.kl_coeff: -0.1 is not allowed"),
    ("train-controller-hidden", "train-controller", "c.yaml", _with("controller.hidden", []), "controller.hidden"),
    ("train-controller-selection-seeds-tuned-on", "train-controller", "c.yaml",
     yaml.safe_dump({"controller": {"selection_seeds": [2000, 100]}, "evaluate": {"tune_seeds": [100, 101]}}),
     "controller.selection_seeds: [100] are also evaluate.tune_seeds"),
    ("train-controller-selection-seeds-held-out", "train-controller", "c.yaml",
     yaml.safe_dump({"controller": {"selection_seeds": [2000, 1003]}}),
     "controller.selection_seeds: [1003] are also evaluate.seeds (held-out)"),
    ("train-controller-selection-seeds-training-seed", "train-controller", "c.yaml",
     yaml.safe_dump({"task": {"seed": 2000}, "controller": {"selection_seeds": [2000, 2001]}}),
     "controller.selection_seeds: [2000] are also task.seed (the training seed)"),
    ("train-controller-selection-seeds-repeated", "train-controller", "c.yaml",
     _with("controller.selection_seeds", [2000, 2000]), "controller.selection_seeds: [2000, 2000] is not allowed"),
    ("evaluate-seeds-flag-selection-seeds", "evaluate-controller --controller pretrained:digits-mlp --seeds 2000-2009",
     "c.yaml", yaml.safe_dump({"controller": {"selection_seeds": [2000, 2001]}}),
     "controller.selection_seeds: [2000, 2001] are also evaluate.seeds (held-out)"),
]


def test_the_table_is_large_enough_and_the_base_config_passes_every_check(tmp_path):
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({**BASE, "compare": {**BASE["compare"], "output_dir": str(tmp_path)}}))
    config = load_config(path)
    check_compare(config)
    check_recommend(config)


def _cli_env() -> dict:
    """The CLI's environment: RAY_ADDRESS where no Ray listens, so reaching Ray fails loudly."""
    return {**os.environ, "RAY_ADDRESS": "127.0.0.1:1", "PYTHONPATH": str(ROOT)}


def _run_case(root: Path, case) -> subprocess.CompletedProcess:
    """Write the case's file under ``root/<id>`` and run the real CLI on it."""
    case_id, command, name, content, _ = case
    tmp_path = root / case_id
    tmp_path.mkdir()
    path = tmp_path / name
    if content == "DIR":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        (tmp_path / "empty-dir").mkdir()
        text = content.replace("EMPTYDIR", str(tmp_path / "empty-dir"))
        if text.strip() and name.endswith(".yaml") and "compare:" in text and "output_dir" not in text:
            text = text.replace("compare:\n", f"compare:\n  output_dir: {tmp_path / 'out'}\n", 1)
        path.write_text(text)
    return subprocess.run([sys.executable, "-m", "lrservice", *command.split(), "--config", str(path)], cwd=tmp_path,
                          env=_cli_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case through the CLI, a few processes at a time (each pays Python's and the
    config's imports; the cases are independent)."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("bad-input")
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip((c[0] for c in CASES), pool.map(lambda c: _run_case(root, c), CASES)))
    return root, done


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_config_is_one_line_before_ray(outcomes, case):
    root, done = outcomes
    case_id, expected = case[0], case[4]
    result = done[case_id]
    lines = result.stderr.splitlines()
    assert result.returncode != 0, result.stdout + result.stderr
    assert len(lines) == 1, result.stderr
    assert expected in lines[0], lines[0]
    assert "Ray" not in result.stdout and "Ray" not in result.stderr  # never reached connect()
    assert not (root / case_id / "out").exists() and not (root / case_id / "results").exists()


def test_a_bad_config_is_refused_without_loading_torch(tmp_path):
    """Config checks need no torch (seconds on a loaded machine): the line comes at once."""
    path = tmp_path / "c.yaml"
    path.write_text(_with("compare.seeds", []))
    code = ("import sys; from lrservice.cli import main; "
            "rc = main(['compare', '--config', sys.argv[1]]); print(rc, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=tmp_path, env=_cli_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stdout + result.stderr
    assert "compare.seeds: give at least one seed" in result.stderr
