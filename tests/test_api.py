"""The Python API (lrservice.api) end to end: each function with a dict, a path and a RunConfig,
its DataFrames against the files on disk, its errors against the CLI's lines, and docs/api.md's
examples executed as written."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import lrservice
from lrservice.cli import main
from lrservice.config import ConfigError, config_from_dict

ROOT = Path(__file__).resolve().parents[1]
TASK = {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": 40, "eval_every": 20, "val_subset": 64,
        "device": "cpu"}
EVALUATE = {"tune_seeds": [5, 6], "seeds": [1, 2, 3], "constant_grid": [0.001, 0.01], "cosine_grid": [0.003, 0.03],
            "initial_lrs": [0.01, 0.001], "rivals": []}  # constant and cosine only: tests/test_kinds.py has the rest
SHIPPED = {"shipped": "pretrained:digits-mlp"}


def _docs_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)


def _exec(block: str) -> tuple[dict, str]:
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "docs/api.md", "exec"), namespace)
    return namespace, out.getvalue()


def _write(path: Path, sections: dict) -> Path:
    path.write_text(yaml.safe_dump(sections))
    return path


# -- imports and errors ------------------------------------------------------------------------
def test_import_and_refused_configs_load_neither_torch_ray_nor_pandas():
    code = ("import sys, lrservice\n"
            "bad = {'task': {'steps': 0}}\n"
            "calls = [lambda: lrservice.compare(bad), lambda: lrservice.recommend(bad),\n"
            "         lambda: lrservice.train_controller(bad), lambda: lrservice.evaluate_controller(bad, 'x.pt')]\n"
            "errors = []\n"
            "for call in calls:\n"
            "    try:\n"
            "        call()\n"
            "    except lrservice.ConfigError as exc:\n"
            "        errors.append(str(exc))\n"
            "print(len(set(errors)), len(errors), sorted(m for m in ('torch', 'ray', 'pandas') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "1 4 []"


def _cases(tmp_path: Path):
    """(CLI argv, the API call) pairs that must fail with the same ConfigError text."""
    bad = _write(tmp_path / "bad.yaml", {"task": {"dataset": "imagenet"}})
    ok = _write(tmp_path / "ok.yaml", {"task": TASK, "evaluate": EVALUATE})
    missing = _write(tmp_path / "missing.yaml", {"task": TASK, "compare": {"arms": [
        {"name": "ctrl", "kind": "controller", "params": {"checkpoint": str(tmp_path / "nope"), "lr": 0.01}}]}})
    return {
        "field": (["compare", "--config", str(bad)], lambda: lrservice.compare(bad)),
        "field-dict": (["compare", "--config", str(bad)], lambda: lrservice.compare({"task": {"dataset": "imagenet"}})),
        "resume+overwrite": (["recommend", "--config", str(ok), "--resume", "--overwrite"],
                             lambda: lrservice.recommend(ok, resume=True, overwrite=True)),
        "checkpoint": (["compare", "--config", str(missing)], lambda: lrservice.compare(missing)),
        "budget": (["recommend", "--config", str(ok), "--budget", "0"], lambda: lrservice.recommend(ok, budget=0)),
        "iterations": (["train-controller", "--config", str(ok), "--iterations", "0"],
                       lambda: lrservice.train_controller(ok, iterations=0)),
        "seeds": (["evaluate-controller", "--config", str(ok), "--controller", "x.pt", "--seeds", "5-7"],
                  lambda: lrservice.evaluate_controller(ok, "x.pt", seeds=[5, 6, 7])),
        "name": (["evaluate-controller", "--config", str(ok), "--controller", "a b=pretrained:digits-mlp"],
                 lambda: lrservice.evaluate_controller(ok, {"a b": "pretrained:digits-mlp"})),
        "baseline-name": (["evaluate-controller", "--config", str(ok), "--controller", "cosine=pretrained:digits-mlp"],
                          lambda: lrservice.evaluate_controller(ok, {"cosine": "pretrained:digits-mlp"})),
    }


@pytest.mark.parametrize("case", ["field", "field-dict", "resume+overwrite", "checkpoint", "budget", "iterations",
                                  "seeds", "name", "baseline-name"])
def test_api_raises_the_config_error_the_cli_prints(tmp_path, capsys, case):
    argv, call = _cases(tmp_path)[case]
    with pytest.raises(ConfigError) as raised:
        call()
    assert main(argv) == 2
    assert capsys.readouterr().err == f"lrservice: invalid config: {raised.value}\n"


def test_a_config_that_is_none_of_path_dict_runconfig_is_one_line():
    with pytest.raises(ConfigError, match=r"^config: 3 is not allowed; give a YAML/JSON path, a dict of sections or a "
                                          r"RunConfig$"):
        lrservice.compare(3)


# -- evaluate_controller (no Ray) -----------------------------------------------------------------
def test_evaluate_controller_from_a_dict_a_path_and_a_runconfig(tmp_path, capsys):
    sections = {"task": TASK, "evaluate": {**EVALUATE, "output_dir": str(tmp_path / "dict")}}
    path = _write(tmp_path / "c.yaml", {"task": TASK, "evaluate": EVALUATE})
    lines: list[str] = []
    typed = config_from_dict({"task": TASK, "evaluate": EVALUATE})
    results = [lrservice.evaluate_controller(sections, SHIPPED, log=lines.append),
               lrservice.evaluate_controller(path, SHIPPED, output_dir=tmp_path / "path", log=lines.append),
               lrservice.evaluate_controller(typed, "pretrained:digits-mlp", output_dir=tmp_path / "runconfig",
                                             log=lines.append)]
    assert capsys.readouterr().out == ""  # progress went to log only
    assert sum("[lrservice] evaluate: digits/mlp" in line for line in lines) == 3
    for result, name in zip(results, ("dict", "path", "runconfig")):
        out = tmp_path / name
        assert result.output_dir == out.resolve() and result.report == (out / "summary.md").resolve()
        pd.testing.assert_frame_equal(result.runs, pd.read_parquet(out / "runs.parquet"))
        pd.testing.assert_frame_equal(result.summary, pd.read_parquet(out / "summary.parquet"))
        assert result.tuned == json.loads((out / "evaluation.json").read_text())["tuned"]
    runs = [r.runs.drop(columns="arm").assign(arm=r.runs["arm"].replace("controller", "shipped")) for r in results]
    pd.testing.assert_frame_equal(runs[0], runs[1])  # the same config in three forms: the same runs
    pd.testing.assert_frame_equal(runs[0], runs[2])
    assert set(results[0].runs["arm"]) == {"constant", "cosine", "shipped"}
    assert len(results[0].runs) == 2 * 3 + 2 * 3  # two baselines, the controller from two initial LRs; 3 seeds each

    # the CLI is a shell over the same function: the same files and the summary printed
    assert main(["evaluate-controller", "--config", str(path), "--controller", "shipped=pretrained:digits-mlp",
                 "--output", str(tmp_path / "cli")]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "cli" / "summary.md").read_text() in printed
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cli" / "runs.parquet"), results[1].runs)


def test_docs_api_evaluate_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes under results/
    namespace, printed = _exec(_docs_blocks()[0])
    result = namespace["result"]
    assert result.output_dir == (tmp_path / "results" / "api-evaluate").resolve()
    assert set(result.summary["arm"]) == {"constant", "cosine", "shipped"} and "shipped" in printed
    assert printed.rstrip().endswith("task.steps: 0 is not allowed; it must be a finite number > 0")


# -- Ray-backed commands ---------------------------------------------------------------------------
@pytest.mark.slow
def test_compare_and_report_from_docs_then_path_and_runconfig(ray_local, tmp_path, monkeypatch, capsys):
    """docs/api.md's comparison as written, then the same config as a path and a RunConfig (resume:
    every phase is done, so the tables come back from the files), then report()."""
    monkeypatch.chdir(tmp_path)
    namespace, printed = _exec(_docs_blocks()[1])
    first, sections = namespace["result"], namespace["config"]
    run_dir = (tmp_path / "results" / "api-tour").resolve()
    assert first.run_dir == run_dir and first.report == run_dir / "report.md" and first.report.exists()
    assert first.exploits is None  # no PBT arm
    pd.testing.assert_frame_equal(first.trials, pd.read_parquet(run_dir / "trials.parquet"))
    pd.testing.assert_frame_equal(first.steps, pd.read_parquet(run_dir / "steps.parquet"))
    ev = pd.read_parquet(run_dir / "trials.parquet").query("phase == 'eval'")
    means = ev.groupby("arm")["final_val_loss"].mean().sort_values()
    assert first.summary["arm"].tolist() == means.index.tolist()  # ranked by mean final validation loss
    assert first.summary["final_val_loss_mean"].tolist() == pytest.approx(means.tolist(), rel=1e-12)
    assert (first.summary["seeds"] == 2).all() and "controller" in set(first.summary["arm"])

    path = _write(tmp_path / "c.yaml", sections)
    lines: list[str] = []
    for again in (lrservice.compare(path, resume=True, log=lines.append),
                  lrservice.compare(config_from_dict(sections), resume=True, log=lines.append)):
        assert again.run_dir == run_dir
        pd.testing.assert_frame_equal(again.trials, first.trials)
        pd.testing.assert_frame_equal(again.summary, first.summary)
    assert sum("resuming run" in line for line in lines) == 2

    capsys.readouterr()
    rebuilt = lrservice.report(run_dir, log=lines.append)
    assert rebuilt.report == run_dir / "report.md" and rebuilt.tensorboard.is_dir()
    pd.testing.assert_frame_equal(rebuilt.summary, first.summary)
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_train_controller_returns_its_log_and_export(ray_local, tmp_path):
    from lrservice.control.controller import LearnedController

    config = config_from_dict({"task": {**TASK, "steps": 40},
                               "controller": {"action_every": 10, "train_batch_size": 40, "minibatch_size": 20,
                                              "num_epochs": 1, "checkpoint_every": 1, "num_env_runners": 0}})
    lines: list[str] = []
    result = lrservice.train_controller(config, iterations=1, output_dir=tmp_path / "ctrl", log=lines.append)
    out = (tmp_path / "ctrl").resolve()
    assert result.output_dir == out and result.export == out / "controller.pt"
    assert result.checkpoint.parent == out / "checkpoints" and result.checkpoint.is_dir()
    pd.testing.assert_frame_equal(result.training_log, pd.read_parquet(out / "training_log.parquet"))
    assert result.training_log["iteration"].tolist() == [1]
    assert LearnedController.from_checkpoint(result.export).task == config.task
    assert lines[-1] == f"[lrservice] controller checkpoint: {result.export}"


@pytest.mark.slow
def test_recommend_returns_the_ranked_candidates(ray_local, tmp_path):
    path = _write(tmp_path / "r.yaml", {
        "task": {**TASK, "eval_every": 10},
        "recommend": {"name": "api", "output_dir": str(tmp_path), "target_accuracy": 0.99, "budget": 200,
                      "num_samples": 3, "top_k": 1, "verify_seeds": [11], "lr_scales": [10.0], "num_composites": 0}})
    result = lrservice.recommend(path, target_accuracy=0.5, budget=40, log=lambda line: None)  # overrides the file
    run_dir = (tmp_path / "api").resolve()
    assert result.run_dir == run_dir
    started = json.loads((run_dir / "config.json").read_text())["config"]["recommend"]
    assert (started["target_accuracy"], started["budget"]) == (0.5, 40)
    candidates = pd.read_parquet(run_dir / "candidates.parquet").sort_values("rank", ignore_index=True)
    pd.testing.assert_frame_equal(result.candidates, candidates)
    pd.testing.assert_frame_equal(result.runs, pd.read_parquet(run_dir / "runs.parquet"))
    pd.testing.assert_frame_equal(result.steps, pd.read_parquet(run_dir / "steps.parquet"))
    assert result.best["candidate"] == candidates["candidate"].iloc[0]
    assert result.recommended.read_text() == result.snippet and result.verdict
    assert result.runs["steps_done"].max() == 40
