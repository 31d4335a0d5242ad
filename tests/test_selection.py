"""Checkpoint selection: the rule on hand-made scores, the table file, the seeds' roles, and
`train-controller` with selection on end to end (scores, pick, export, resume)."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from lrservice.config import ConfigError, config_from_dict, stored_sections
from lrservice.control.selection import (
    REUSED_FROM,
    SELECTION_COLUMNS,
    best_run,
    checkpoint_line,
    checkpoint_score,
    marked,
    pick,
    read_selection,
    scores,
    write_selection,
)

STARTS = (1e-2, 1e-3, 1e-4)


def _rows(deltas: dict[int, tuple[float, ...]], diverged: dict[int, int] | None = None, task: str = "digits/mlp",
          cosine: float = 1.0) -> list[dict]:
    """One row per (iteration, start) of one task: Δ vs cosine as given, tuned cosine's loss ``cosine``;
    everything else filler."""
    rows = []
    for iteration, ds in deltas.items():
        for lr, d in zip(STARTS, ds):
            rows.append({"iteration": iteration, "checkpoint": f"iter_{iteration:06d}", "episodes": 32.0 * iteration,
                         "training_child_steps": 1000.0 * iteration, "task": task, "cosine_val_loss": cosine,
                         "initial_lr": lr, "seeds": 10,
                         "val_loss_mean": 0.08 + d, "val_loss_std": 0.01, "dval_vs_cosine": d,
                         "dval_vs_cosine_low": d - 0.01, "dval_vs_cosine_high": d + 0.01, "test_loss_mean": 0.09,
                         "test_accuracy_mean": 0.98, "dacc_vs_cosine": 0.0, "dacc_vs_cosine_low": -0.001,
                         "dacc_vs_cosine_high": 0.001,
                         "diverged": (diverged or {}).get(iteration, 0) if lr == 1e-2 else 0,
                         "selection_child_steps": 6000.0, "wall_s": 3.0, "train_seed": 0})
    return rows


def test_pick_is_the_lowest_mean_over_starts_neither_first_nor_last_nor_best_single_start():
    # Dyadic values: every sum below is exact. Means over the three starts:
    # 8: (0.25 - 0.125 + 0.5)/3 = 0.625/3; 16: (-0.25 + 0.125 - 0.125)/3 = -0.25/3 (the lowest);
    # 24: (-0.5 + 0.5 + 0.25)/3 = 0.25/3 (best from 1e-2 alone); 32: (0 + 0 + 0)/3 = 0.
    rows = _rows({8: (0.25, -0.125, 0.5), 16: (-0.25, 0.125, -0.125), 24: (-0.5, 0.5, 0.25), 32: (0.0, 0.0, 0.0)})
    assert scores(rows) == {8: 0.625 / 3, 16: -0.25 / 3, 24: 0.25 / 3, 32: 0.0}
    assert pick(rows) == 16
    assert pick(list(reversed(rows))) == 16  # row order does not matter


def test_each_task_weighs_the_same_whatever_the_scale_of_its_loss():
    """Δ is taken relative to tuned cosine's loss on its task: a task whose losses are 16x larger
    (MNIST-1D's ~1.0 against digits' ~0.06) does not outvote the other. Plain Δ would pick 8."""
    small = _rows({8: (0.0625, 0.0625, 0.0625), 16: (-0.0625, -0.0625, -0.0625)}, task="digits", cosine=0.0625)
    large = _rows({8: (-0.25, -0.25, -0.25), 16: (0.25, 0.25, 0.25)}, task="mnist1d", cosine=1.0)
    rows = small + large
    # Relative: 8 -> (1 - 0.25) / 2 = 0.375; 16 -> (-1 + 0.25) / 2 = -0.375. Plain: 8 -> -0.09375, 16 -> +0.09375.
    assert scores(rows) == {8: 0.375, 16: -0.375}
    assert pick(rows) == 16
    assert [(r["iteration"], r["task"]) for r in marked(rows)][:6] == [(8, "digits")] * 3 + [(8, "mnist1d")] * 3
    line = checkpoint_line([r for r in marked(rows) if r["iteration"] == 16], best=16)
    assert "score -37.50%" in line and "digits: from 1e-02 " in line and "mnist1d: from 1e-02 " in line
    no_reference = [{**r, "cosine_val_loss": math.nan} for r in rows]
    assert scores(no_reference) == {8: math.inf, 16: math.inf}


def test_a_diverging_checkpoint_is_never_picked_even_with_the_lowest_delta():
    """The paired difference skips non-finite pairs, so a diverging policy's Δ can look best."""
    rows = _rows({8: (0.0625, 0.0625, 0.0625), 16: (-0.5, -0.5, -0.5)}, diverged={16: 1})
    assert checkpoint_score([r for r in rows if r["iteration"] == 16]) == math.inf
    assert pick(rows) == 8
    nan_delta = _rows({8: (0.0625, 0.0625, 0.0625), 16: (-0.5, math.nan, -0.5)})
    assert pick(nan_delta) == 8
    assert checkpoint_score([]) == math.inf


def test_ties_go_to_the_earlier_iteration_and_an_all_inf_table_to_the_first():
    rows = _rows({8: (0.125, 0.25, 0.5), 16: (-0.5, 0.0, 0.25), 24: (0.25, -0.5, 0.0), 32: (0.5, 0.5, 0.5)})
    assert scores(rows)[16] == scores(rows)[24] == -0.25 / 3
    assert pick(rows) == 16 and pick([r for r in rows if r["iteration"] != 16]) == 24
    broken = _rows({8: (0.0, 0.0, 0.0), 16: (0.0, 0.0, 0.0)}, diverged={8: 2, 16: 1})
    assert pick(broken) == 8
    with pytest.raises(ValueError, match="no scored checkpoints"):
        pick([])


def test_table_marks_the_pick_round_trips_atomically_and_the_line_names_the_numbers(tmp_path):
    rows = marked(_rows({8: (0.25, -0.125, 0.5), 16: (-0.25, 0.125, -0.125), 24: (-0.5, 0.5, 0.25)}))
    assert [(r["iteration"], r["initial_lr"]) for r in rows] == [(i, lr) for i in (8, 16, 24) for lr in STARTS]
    assert {r["iteration"] for r in rows if r["picked"]} == {16}
    assert all(r["score"] == scores(rows)[r["iteration"]] for r in rows)
    path = tmp_path / "selection.parquet"
    write_selection(rows, path)
    assert [p.name for p in tmp_path.iterdir()] == ["selection.parquet"]  # no temp file left behind
    assert pq.read_schema(path).names == list(SELECTION_COLUMNS)
    assert read_selection(path) == rows
    assert read_selection(tmp_path / "nowhere.parquet") == []
    line = checkpoint_line([r for r in rows if r["iteration"] == 24], best=16)
    assert line.startswith("[lrservice] selection iter 24 (768 episodes): score +8.33%")
    assert "from 1e-02 " in line and "(Δ -0.5000 [-0.5100, -0.4900]" in line and "best so far: iter 16" in line
    assert "18,000 child steps" in line


def test_best_run_is_the_run_whose_pick_scores_lowest_ties_to_the_first_asked_for():
    assert best_run({3: 0.01, 1: -0.02, 2: -0.01}) == 1
    assert best_run({3: -0.02, 1: -0.02, 2: 0.5}) == 3  # a tie goes to the first run asked for, not the lowest seed
    assert best_run({5: math.inf, 4: math.inf}) == 5
    assert best_run({5: math.inf, 4: 0.3}) == 4
    with pytest.raises(ValueError, match="no runs"):
        best_run({})


def test_a_record_written_with_the_training_seed_among_its_settings_is_resumed_with_its_cosine_and_rows(tmp_path):
    """Selection settings no longer include task.seed (runs of one recipe share a selection); a record
    written before keeps its scored rows and cached cosine, and another seed there is still refused."""
    from lrservice.control.checkpoint import CHECKPOINTS, META_FILE
    from lrservice.control.training import CheckpointSelection, selection_settings

    config = config_from_dict({"task": TASK, "controller": {**CONTROLLER, "tasks": []}, "evaluate": EVALUATE})
    (tmp_path / CHECKPOINTS / "iter_000001").mkdir(parents=True)
    (tmp_path / CHECKPOINTS / "iter_000001" / META_FILE).write_text("{}")
    rows = marked(_rows({1: (0.01, 0.02, 0.03)}, task="digits/mlp/adam/60"))
    write_selection(rows, tmp_path / "selection.parquet")
    cosine = {"digits/mlp/adam/60": {"lr": 0.01, "runs": [], "val_loss_mean": 1.0}}
    old = {"settings": {**selection_settings(config), "task.seed": config.task.seed}, "cosine": cosine}
    (tmp_path / "selection.json").write_text(json.dumps(old))
    opened = CheckpointSelection.open(config, tmp_path, done=1, log=lambda line: None)
    assert opened.rows == rows and opened.record["cosine"] == cosine
    assert opened.record["settings"] == selection_settings(config) and "task.seed" not in opened.record["settings"]
    other = config_from_dict({"task": TASK, "controller": {**CONTROLLER, "tasks": [], "selection_seeds": [2000, 2009]},
                              "evaluate": EVALUATE})
    with pytest.raises(ConfigError, match=r"^controller\.selection_seeds: \[2000, 2009\] differs from the selection"):
        CheckpointSelection.open(other, tmp_path, done=1, log=lambda line: None)

    # A suite's record listed each task with its seed (pretrained:general's run): resumed the same way.
    suite = [{"dataset": "digits", "model": "mlp", "steps": 60}, {"dataset": "digits", "model": "mlp", "steps": 40}]
    config = config_from_dict({"task": TASK, "controller": {**CONTROLLER, "tasks": suite}, "evaluate": EVALUATE})
    settings = selection_settings(config)
    assert all("seed" not in t for t in settings["controller.tasks"])
    old = {"settings": {**settings, "task.seed": 0,
                        "controller.tasks": [{**t, "seed": 0} for t in settings["controller.tasks"]]}, "cosine": cosine}
    (tmp_path / "selection.json").write_text(json.dumps(old))
    opened = CheckpointSelection.open(config, tmp_path, done=1, log=lambda line: None)
    assert opened.rows == rows and opened.record["cosine"] == cosine and opened.record["settings"] == settings
    longer = config_from_dict({"task": TASK, "evaluate": EVALUATE, "controller": {
        **CONTROLLER, "tasks": [suite[0], {**suite[1], "steps": 50}]}})
    with pytest.raises(ConfigError, match=r"^controller\.tasks: .* differs from the selection"):
        CheckpointSelection.open(longer, tmp_path, done=1, log=lambda line: None)


@pytest.mark.parametrize("controller, message", [
    ({"train_seeds": [1, 2]}, "controller.train_seeds: [1, 2] needs controller.selection_seeds"),
    ({"train_seeds": [1, 1], "selection_seeds": [2000]}, "controller.train_seeds: [1, 1] is not allowed"),
    ({"train_seeds": [-1], "selection_seeds": [2000]}, "controller.train_seeds: [-1] is not allowed"),
    ({"train_seeds": [1, 2000], "selection_seeds": [2000]},
     "controller.selection_seeds: [2000] are also controller.train_seeds (training seeds)"),
    ({"train_seeds": [1, 2], "selection_seeds": [2000], "across_runs": "vote"},
     "controller.across_runs: 'vote' is not allowed; choose one of: pick, ensemble"),
    ({"train_seeds": [1], "selection_seeds": [2000], "across_runs": "ensemble"},
     "controller.across_runs: ensemble needs controller.train_seeds to name at least two runs"),
    ({"across_runs": "ensemble"}, "controller.across_runs: ensemble needs controller.train_seeds"),
    ({"train_seeds": [1, 2], "selection_seeds": [2000], "across_runs": "ensemble", "action_space": "continuous"},
     "controller.across_runs: ensemble averages action probabilities"),
])
def test_several_runs_need_distinct_seeds_apart_from_the_selection_seeds(controller, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"controller": controller})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("evaluate, task, message", [
    ({"tune_seeds": [100, 2001]}, {}, "controller.selection_seeds: [2001] are also evaluate.tune_seeds"),
    ({"seeds": [1000, 2000, 2002]}, {}, "controller.selection_seeds: [2000, 2002] are also evaluate.seeds (held-out)"),
    ({}, {"seed": 2001}, "controller.selection_seeds: [2001] are also task.seed (the training seed)"),
])
def test_selection_seeds_must_be_apart_from_tune_held_out_and_training_seeds(evaluate, task, message):
    data = {"task": task, "controller": {"selection_seeds": [2000, 2001, 2002]}, "evaluate": evaluate}
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    # A checkpoint's stored sections are checked on their own: the defaults standing in for its
    # evaluate section must not refuse them.
    stored = stored_sections({"task": task, "controller": data["controller"]})
    assert stored.controller.selection_seeds == (2000, 2001, 2002)


def test_selection_seeds_are_distinct_non_negative_and_empty_turns_selection_off():
    for bad in ([2000, 2000], [-1, 2000]):
        with pytest.raises(ConfigError, match=r"^controller\.selection_seeds: .* give distinct non-negative"):
            config_from_dict({"controller": {"selection_seeds": bad}})
    assert config_from_dict({}).controller.selection_seeds == ()
    assert config_from_dict({"controller": {"initial_lr": 1e-3}}).controller.start_lrs == (1e-3,)


# -- end to end --------------------------------------------------------------------------
TASK = {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": 60, "eval_every": 20, "val_subset": 128,
        "device": "cpu"}
OTHER = {"dataset": "digits", "model": "mlp", "model_args": {"hidden": [32]}, "optimizer": "momentum",
         "batch_size": 16, "steps": 40, "eval_every": 20, "val_subset": 128, "device": "cpu"}
LABELS = {"digits/mlp/adam/60": TASK, "digits/mlp/momentum/40": OTHER}
CONTROLLER = {"action_every": 10, "train_batch_size": 60, "minibatch_size": 30, "num_epochs": 1, "iterations": 2,
              "checkpoint_every": 1, "num_env_runners": 0, "selection_seeds": [2000, 2001], "tasks": [TASK, OTHER]}
EVALUATE = {"tune_seeds": [100], "seeds": [1000, 1001], "cosine_grid": [0.001, 0.01]}


def _tensors(payload: dict) -> list[torch.Tensor]:
    return ([t for layer in payload["policy"]["layers"] for t in (layer["weight"], layer["bias"])]
            + [payload["normaliser"]["mean"], payload["normaliser"]["std"]])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_controller_scores_every_checkpoint_on_every_task_exports_the_pick_and_resumes_without_rescoring(
        tmp_path, capsys, monkeypatch):
    import ray

    import lrservice.cli
    from lrservice.child.trainer import load_task_data
    from lrservice.cli import main
    from lrservice.control.checkpoint import CHECKPOINTS, EXPORT_FILE, LAST_FILE, export_controller, load_export
    from lrservice.control.controller import LearnedController
    from lrservice.control.evaluate import run_baselines, run_controller

    monkeypatch.setattr(lrservice.cli, "COMMANDS", ("train_controller",))
    if ray.is_initialized():
        ray.shutdown()
    cfg_file = tmp_path / "ctrl.yaml"
    cfg_file.write_text(yaml.safe_dump({"task": TASK, "controller": CONTROLLER, "evaluate": EVALUATE,
                                        "resources": {"num_cpus": 2}}))
    out = tmp_path / "out"
    seeds = CONTROLLER["selection_seeds"]
    per_checkpoint = sum(len(STARTS) * len(seeds) * t["steps"] for t in LABELS.values())
    try:
        assert main(["train-controller", "--config", str(cfg_file), "--output", str(out)]) == 0
        printed = capsys.readouterr().out
        assert printed.count("[lrservice] selection iter ") == 2 and printed.count("[lrservice] tuned cosine: ") == 2
        assert "[lrservice] selection: pick iter " in printed and "of training's" in printed

        rows = read_selection(out / "selection.parquet")
        assert [(r["iteration"], r["task"], r["initial_lr"]) for r in rows] == [
            (i, label, lr) for i in (1, 2) for label in sorted(LABELS) for lr in STARTS]
        assert all(r["seeds"] == len(seeds) and r["selection_child_steps"] == len(seeds) * LABELS[r["task"]]["steps"]
                   for r in rows)
        record = json.loads((out / "selection.json").read_text())
        assert all(r["cosine_val_loss"] == record["cosine"][r["task"]]["val_loss_mean"] for r in rows)
        by_hand = {i: sum(r["dval_vs_cosine"] / r["cosine_val_loss"] for r in rows if r["iteration"] == i)
                   / (len(STARTS) * len(LABELS)) for i in (1, 2)}
        if not all(math.isfinite(v) for v in by_hand.values()):
            pytest.fail(f"a tiny run diverged on a selection seed: {by_hand}")
        chosen = min(by_hand, key=lambda i: (by_hand[i], i))
        assert {r["iteration"] for r in rows if r["picked"]} == {chosen}

        # controller.pt is the chosen checkpoint's export; last.pt the newest one's.
        deployed = load_export(out / EXPORT_FILE)
        for name, iteration in ((EXPORT_FILE, chosen), (LAST_FILE, 2)):
            fresh = torch.load(export_controller(out / CHECKPOINTS / f"iter_{iteration:06d}", tmp_path / "x.pt"),
                               weights_only=True)
            for a, b in zip(_tensors(load_export(out / name)), _tensors(fresh), strict=True):
                assert torch.equal(a, b), name
        assert deployed["training"]["iteration"] == chosen and deployed["selection"]["iteration"] == chosen
        assert deployed["selection"]["tasks"] == list(LABELS)
        assert LearnedController.from_checkpoint(out).checkpoint == out / EXPORT_FILE

        # The table's Δ is the pick's deterministic policy vs each task's tuned cosine, recomputed here.
        for label, section in LABELS.items():
            cosine_lr = record["cosine"][label]["lr"]
            assert cosine_lr in EVALUATE["cosine_grid"] and deployed["selection"]["cosine_lr"][label] == cosine_lr
            task = config_from_dict({"task": section}).task
            data = load_task_data(task)
            cosine = {r.seed: r.val_loss for r in run_baselines(task, data, [("cosine", cosine_lr, s) for s in seeds])}
            mine = run_controller(LearnedController.from_checkpoint(out / EXPORT_FILE), task, data,
                                  [(lr, s) for lr in STARTS for s in seeds])
            for lr in STARTS:
                delta = sum(r.val_loss - cosine[r.seed] for r in mine if r.initial_lr == lr) / len(seeds)
                (row,) = [r for r in rows if r["iteration"] == chosen and r["task"] == label and r["initial_lr"] == lr]
                assert row["dval_vs_cosine"] == pytest.approx(delta, rel=1e-9, abs=1e-12)

        # The cost, by hand: per task, cosine tuning (grid x tune seeds) and its runs; then tasks x starts x seeds
        # per checkpoint.
        once = sum((len(EVALUATE["cosine_grid"]) * len(EVALUATE["tune_seeds"]) + len(seeds)) * t["steps"]
                   for t in LABELS.values())
        assert deployed["selection"]["child_steps"] == once + 2 * per_checkpoint
        assert deployed["selection"]["run_child_steps"] == rows[-1]["training_child_steps"] > 0

        # Resume to 3 iterations: only the new checkpoint is scored; the old rows stay as they were.
        assert main(["train-controller", "--config", str(cfg_file), "--output", str(out),
                     "--resume", "--iterations", "3"]) == 0
        resumed = capsys.readouterr().out
        assert resumed.count("[lrservice] selection iter ") == 1 and "selection iter 3 " in resumed
        assert "[lrservice] tuned cosine:" not in resumed  # cached in selection.json, not tuned again
        again = read_selection(out / "selection.parquet")
        keep = ("iteration", "task", "initial_lr", "val_loss_mean", "dval_vs_cosine", "test_accuracy_mean", "wall_s")
        assert [{k: r[k] for k in keep} for r in again[:len(rows)]] == [{k: r[k] for k in keep} for r in rows]
        assert [r["iteration"] for r in again[len(rows):]] == [3] * len(STARTS) * len(LABELS)
        assert load_export(out / EXPORT_FILE)["selection"]["child_steps"] == once + 3 * per_checkpoint

        # Resuming with other selection seeds would compare scores from two seed sets: refused, one line.
        changed = tmp_path / "changed.yaml"
        changed.write_text(yaml.safe_dump({"task": TASK, "controller": {**CONTROLLER, "selection_seeds": [2000, 2005]},
                                           "evaluate": EVALUATE, "resources": {"num_cpus": 2}}))
        assert main(["train-controller", "--config", str(changed), "--output", str(out),
                     "--resume", "--iterations", "4"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err
        assert "controller.selection_seeds: [2000, 2005] differs from the selection recorded in" in err
    finally:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_several_training_seeds_train_one_run_each_and_export_the_best_pick_across_them(tmp_path, capsys, monkeypatch):
    import ray

    import lrservice
    import lrservice.cli
    from lrservice.cli import main
    from lrservice.compare.cost import controller_cost
    from lrservice.control.checkpoint import CHECKPOINTS, EXPORT_FILE, load_export, resolve_checkpoint
    from lrservice.control.controller import LearnedController
    from lrservice.control.runs import run_dir

    monkeypatch.setattr(lrservice.cli, "COMMANDS", ("train_controller",))
    if ray.is_initialized():
        ray.shutdown()
    controller = {**CONTROLLER, "tasks": [], "iterations": 1, "train_seeds": [7, 3]}
    cfg_file = tmp_path / "runs.yaml"
    cfg_file.write_text(yaml.safe_dump({"task": TASK, "controller": controller, "evaluate": EVALUATE,
                                        "resources": {"num_cpus": 2}}))
    out = tmp_path / "out"
    try:
        assert main(["train-controller", "--config", str(cfg_file), "--output", str(out)]) == 0
        printed = capsys.readouterr().out
        assert printed.count("[lrservice] tuned cosine: ") == 1  # tuned once, handed to the second run
        assert "controller run 1/2: training seed 7" in printed and "controller run 2/2: training seed 3" in printed
        assert "[lrservice] selection across 2 runs: " in printed

        # Each run is an ordinary output directory trained from its own seed.
        runs = {seed: read_selection(run_dir(out, seed) / "selection.parquet") for seed in (7, 3)}
        for seed, rows in runs.items():
            assert (run_dir(out, seed) / CHECKPOINTS).is_dir() and {r["train_seed"] for r in rows} == {seed}
            assert load_export(run_dir(out, seed) / EXPORT_FILE)["task"]["seed"] == seed
        cosine = [json.loads((run_dir(out, s) / "selection.json").read_text())["cosine"] for s in (7, 3)]
        assert all(REUSED_FROM not in tuned for tuned in cosine[0].values())  # the first run tuned it
        assert {label: {k: v for k, v in tuned.items() if k != REUSED_FROM} for label, tuned in cosine[1].items()} \
            == cosine[0] and {tuned[REUSED_FROM] for tuned in cosine[1].values()} == {7}
        assert "cosine 0, reused from the run of training seed 7 + scoring" in printed
        # The runs differ (another PPO seed draws other children), or the pick across them would test nothing.
        assert [r["val_loss_mean"] for r in runs[7]] != [r["val_loss_mean"] for r in runs[3]]

        # The pick, by hand: the run whose checkpoint has the lowest mean relative Δ vs tuned cosine.
        by_hand = {seed: sum(r["dval_vs_cosine"] / r["cosine_val_loss"] for r in rows) / len(rows)
                   for seed, rows in runs.items()}
        chosen = min((7, 3), key=lambda s: (by_hand[s], (7, 3).index(s)))
        table = read_selection(out / "selection.parquet")
        assert sorted((r["train_seed"], r["initial_lr"]) for r in table) == sorted(
            (s, lr) for s in (7, 3) for lr in STARTS)
        assert {r["train_seed"] for r in table if r["picked"]} == {chosen}

        deployed = load_export(out / EXPORT_FILE)
        for a, b in zip(_tensors(deployed), _tensors(load_export(run_dir(out, chosen) / EXPORT_FILE)), strict=True):
            assert torch.equal(a, b)
        picked = deployed["selection"]
        assert picked["train_seed"] == chosen and picked["train_seeds"] == [7, 3]
        assert picked["score"] == pytest.approx(by_hand[chosen], rel=1e-12)
        # A pick across runs costs every run: both trainings, both scorings, cosine once.
        steps = {s: load_export(run_dir(out, s) / EXPORT_FILE)["selection"] for s in (7, 3)}
        assert picked["run_child_steps"] == sum(steps[s]["run_child_steps"] for s in (7, 3)) > 0
        assert picked["child_steps"] == steps[7]["tuning_child_steps"] + sum(
            steps[s]["scoring_child_steps"] for s in (7, 3))
        # Each run's own export counts what that run paid: the second was handed cosine, tuned nothing.
        assert steps[7]["tuning_child_steps"] > 0 and steps[3]["tuning_child_steps"] == 0
        assert steps[3]["child_steps"] == steps[3]["scoring_child_steps"]
        assert resolve_checkpoint(out) == (out / EXPORT_FILE).resolve()  # a compare arm or evaluate takes the dir
        cost = controller_cost(out, trained_here=True, action_every=CONTROLLER["action_every"])  # compare's auto arm
        assert cost.steps == picked["run_child_steps"] + picked["child_steps"]
        logs = [pq.read_table(run_dir(out, s) / "training_log.parquet").to_pylist() for s in (7, 3)]
        assert cost.wall_s == pytest.approx(sum(rows[-1]["wall_s"] for rows in logs))
        assert "1+1 PPO iterations" in cost.note

        # Without --resume the runs are not trained over: one line.
        assert main(["train-controller", "--config", str(cfg_file), "--output", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "already holds controller checkpoints" in err and "--resume" in err

        # Resumed to 2 iterations: every run trains on, cosine is not tuned again; the result names the
        # run picked from.
        lines: list[str] = []
        result = lrservice.train_controller(str(cfg_file), iterations=2, resume=True, output_dir=out,
                                            log=lines.append)
        assert not any(line.startswith("[lrservice] tuned cosine: ") for line in lines)
        assert sum(line.startswith("[lrservice] selection iter 2 ") for line in lines) == 2
        seed = load_export(out / EXPORT_FILE)["selection"]["train_seed"]
        assert result.checkpoint.parent.parent == run_dir(out, seed).resolve()
        assert list(result.training_log["iteration"]) == [1, 2]

        # The same runs as an ensemble (across_runs only changes what is exported: nothing trains again):
        # controller.pt holds every run's pick, acting on the mean of their action probabilities.
        ensemble_file = tmp_path / "ensemble.yaml"
        ensemble_file.write_text(yaml.safe_dump({"task": TASK, "controller": {**controller, "across_runs": "ensemble"},
                                                 "evaluate": EVALUATE, "resources": {"num_cpus": 2}}))
        lines.clear()
        lrservice.train_controller(str(ensemble_file), iterations=2, resume=True, output_dir=out, log=lines.append)
        assert not any(line.startswith("[lrservice] iter ") for line in lines)
        assert any("ensemble of all 2 picks -> " in line for line in lines)
        deployed = load_export(out / EXPORT_FILE)
        picks = [load_export(run_dir(out, s) / EXPORT_FILE) for s in (7, 3)]
        assert deployed["version"] == 2 and deployed["selection"]["across_runs"] == "ensemble"
        assert "score" not in deployed["selection"] and "iteration" not in deployed["selection"]  # no one run's
        assert [m["selection"]["score"] for m in deployed["members"]] == [p["selection"]["score"] for p in picks]
        for member, pick in zip(deployed["members"], picks, strict=True):
            for a, b in zip(_tensors(member), _tensors(pick), strict=True):
                assert torch.equal(a, b)
        ensemble = LearnedController.from_checkpoint(out)
        rows = np.random.default_rng(0).normal(size=(20, len(deployed["features"]))).astype(np.float32)
        alone = np.mean([LearnedController(p).action_probabilities(rows) for p in picks], axis=0)
        np.testing.assert_array_equal(ensemble.actions(rows), alone.argmax(axis=1))
        cost = controller_cost(out, trained_here=True, action_every=CONTROLLER["action_every"])
        assert cost.steps == deployed["selection"]["run_child_steps"] + deployed["selection"]["child_steps"]
    finally:
        ray.shutdown()
