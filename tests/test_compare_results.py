"""Parquet schema, dedupe, atomic writes, winners and the report, from tables the tests write."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lrservice.compare.arms import pick_winners
from lrservice.compare.report import PLOTS, build_report
from lrservice.compare.results import (
    STEPS_SCHEMA,
    TRIALS_SCHEMA,
    arm_summary,
    format_summary,
    rows_from_reports,
    to_table,
)
from lrservice.files import write_parquet

STEPS_COLUMNS = ["run_id", "phase", "arm", "trial_id", "params", "seed", "step", "train_loss", "val_loss",
                 "val_accuracy", "lr", "elapsed_s", "member", "parent_trial_id", "parent_step"]
TRIALS_COLUMNS = ["run_id", "phase", "arm", "trial_id", "params", "seed", "steps_done", "diverged", "final_val_loss",
                  "final_val_accuracy", "test_loss", "test_accuracy", "top5_accuracy", "conf_mean_correct",
                  "conf_std_correct", "class_conf_spread", "train_test_loss_gap", "steps_to_target",
                  "seconds_to_target", "wall_s", "target_accuracy", "member", "cost_steps", "cost_wall_s", "cost_note"]


def test_schemas_have_the_documented_columns_and_types():
    assert STEPS_SCHEMA.names == STEPS_COLUMNS
    assert TRIALS_SCHEMA.names == TRIALS_COLUMNS
    assert STEPS_SCHEMA.field("seed").type == pa.int64() and STEPS_SCHEMA.field("lr").type == pa.float64()
    assert TRIALS_SCHEMA.field("diverged").type == pa.bool_()
    assert TRIALS_SCHEMA.field("steps_to_target").type == pa.int64()


def _spec(arm="a", seed=0, phase="eval"):
    return {"run_id": "r", "phase": phase, "arm": arm, "kind": "constant", "params": {"lr": 0.01}, "seed": seed}


def test_rows_from_reports_dedupes_a_restarted_trial():
    """Steps 20 and 40 were reported, the trial failed, restarted from step 20, reported 40 and 60 again."""
    reports = [
        {"step": 20, "train_loss": 1.0, "val_loss": 0.9, "val_accuracy": 0.5, "lr": 0.01, "elapsed_s": 1.0,
         "final": False},
        {"step": 40, "train_loss": 0.8, "val_loss": 0.7, "val_accuracy": 0.6, "lr": 0.01, "elapsed_s": 2.0,
         "final": False},
        {"step": 40, "train_loss": 0.81, "val_loss": 0.71, "val_accuracy": 0.61, "lr": 0.01, "elapsed_s": 2.1,
         "final": False},
        {"step": 60, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.9, "lr": 0.01, "elapsed_s": 3.0,
         "final": True,
         "diverged": False, "steps_done": 60, "test_loss": 0.45, "test_accuracy": 0.88, "steps_to_target": None,
         "seconds_to_target": float("nan"), "target_accuracy": 0.95},
    ]
    steps, summary = rows_from_reports(_spec(), "t1", reports, wall_s=4.5)
    assert [r["step"] for r in steps] == [20, 40, 60]
    assert steps[1]["val_loss"] == 0.71  # the later report wins
    assert summary["final_val_loss"] == 0.4 and summary["steps_done"] == 60 and summary["wall_s"] == 4.5
    assert summary["steps_to_target"] is None and summary["seconds_to_target"] is None
    table = to_table([summary], TRIALS_SCHEMA)
    assert table.schema.equals(TRIALS_SCHEMA)
    assert table.column("steps_to_target").null_count == 1
    _, unfinished = rows_from_reports(_spec(), "t2", reports[:2], wall_s=1.0)
    assert unfinished is None


def test_write_atomic_never_leaves_a_partial_file(tmp_path):
    path = tmp_path / "steps.parquet"
    good = to_table([{**_spec(), "trial_id": "t", "params": "{}", "step": 10, "val_loss": 1.0}], STEPS_SCHEMA)
    write_parquet(good, path)

    class Broken:  # pyarrow fails on it part-way through write_table
        schema = STEPS_SCHEMA

    with pytest.raises(Exception):
        write_parquet(Broken(), path)
    assert pq.read_table(path).equals(good)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["steps.parquet"]


def test_pick_winners_lowest_mean_loss_and_diverged_loses():
    rows = [
        {"arm": "c", "params": {"lr": 0.1}, "final_val_loss": 0.10, "diverged": False},
        {"arm": "c", "params": {"lr": 0.1}, "final_val_loss": None, "diverged": True},
        {"arm": "c", "params": {"lr": 0.01}, "final_val_loss": 0.30, "diverged": False},
        {"arm": "c", "params": {"lr": 0.01}, "final_val_loss": 0.20, "diverged": False},
        {"arm": "c", "params": {"lr": 0.001}, "final_val_loss": 0.26, "diverged": False},
        {"arm": "c", "params": {"lr": 0.001}, "final_val_loss": 0.26, "diverged": False},
    ]
    assert pick_winners(rows) == {"c": {"lr": 0.01}}  # mean 0.25 < 0.26 < inf


def _fixture_run(run_dir, rng):
    """A run dir with three arms x three seeds of eval trials (plus tune rows), as compare writes it."""
    arms = {"alpha": 0.30, "beta": 0.10, "gamma": 0.20}
    steps, trials = [], []
    for arm, level in arms.items():
        for seed in range(3):
            tid = f"{arm}-{seed}"
            val = level + rng.normal(0, 0.02)
            for step in (10, 20, 30):
                steps.append({"run_id": "r", "phase": "eval", "arm": arm, "trial_id": tid,
                              "params": json.dumps({"lr": level}),
                              "seed": seed, "step": step, "train_loss": val * 40 / step, "val_loss": val * 30 / step,
                              "val_accuracy": 1 - val, "lr": level / step, "elapsed_s": step / 10})
            reached = None if (arm == "alpha" and seed == 0) else int(rng.integers(10, 31))
            trials.append({"run_id": "r", "phase": "eval", "arm": arm, "trial_id": tid,
                           "params": json.dumps({"lr": level}),
                           "seed": seed, "steps_done": 30, "diverged": False, "final_val_loss": val,
                           "final_val_accuracy": 1 - val, "test_loss": val + 0.01, "test_accuracy": 1 - val - 0.01,
                           "steps_to_target": reached, "seconds_to_target": None if reached is None else reached / 10,
                           "wall_s": 1.0, "target_accuracy": 0.8})
    trials.append({**trials[0], "phase": "tune", "trial_id": "tune-0", "final_val_loss": 0.01})  # must not be ranked
    write_parquet(to_table(steps, STEPS_SCHEMA), run_dir / "steps.parquet")
    write_parquet(to_table(trials, TRIALS_SCHEMA), run_dir / "trials.parquet")
    return pd.DataFrame(steps), pd.DataFrame(trials)


def test_report_renders_and_ranking_matches_pandas(tmp_path):
    steps, trials = _fixture_run(tmp_path, np.random.default_rng(0))
    md = build_report(tmp_path, log=lambda _: None)
    for name in ("report.md", "report.html", "summary.csv", *PLOTS):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "val_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ev = trials[trials["phase"] == "eval"]
    direct = ev.groupby("arm")["final_val_loss"].mean().sort_values()
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary["arm"]) == list(direct.index) == ["beta", "gamma", "alpha"]
    assert summary["final_val_loss_mean"].to_numpy() == pytest.approx(direct.to_numpy())
    assert summary["test_accuracy_std"].to_numpy() == pytest.approx(
        ev.groupby("arm")["test_accuracy"].std(ddof=0)[direct.index].to_numpy())
    alpha = summary.set_index("arm").loc["alpha"]
    reached = ev[(ev["arm"] == "alpha")]["steps_to_target"].dropna()
    assert alpha["reached"] == 2 and alpha["steps_to_target_mean"] == pytest.approx(reached.mean())
    text = md.read_text()
    assert text.index("| 1 | beta") < text.index("| 2 | gamma") < text.index("| 3 | alpha")
    assert "val_loss.png" in text and "lr.png" in text
    assert arm_summary(trials, phase="tune")["arm"].tolist() == ["alpha"]
    assert not math.isnan(summary["final_val_loss_std"].iloc[0])


@pytest.mark.parametrize("arm,field", [
    ({"name": "s", "kind": "step", "grid": {"lr": [0.01]}}, "compare.arms[0].params"),
    ({"name": "c", "kind": "cyclic", "params": {"base_lr": 0.1, "max_lr": 0.01, "step_size_up": 10}},
     "compare.arms[0].params"),
    ({"name": "z", "kind": "policy", "params": {"name": "NOPE", "k0": 0.1}}, "compare.arms[0].params"),
    ({"name": "p", "kind": "pbt", "params": {"population": 2}}, "compare.arms[0].params.population"),
    ({"name": "p", "kind": "pbt", "params": {"interval": 15}}, "compare.arms[0].params.interval"),
    ({"name": "p", "kind": "pbt", "grid": {"lr_min": [0.001]}}, "compare.arms[0].grid"),
    ({"name": "k", "kind": "controller", "params": {"checkpoint": "auto", "speed": 2}}, "compare.arms[0].params.speed"),
])
def test_invalid_arms_name_the_field(arm, field):
    from lrservice.compare.arms import validate_compare
    from lrservice.config import ConfigError, config_from_dict

    config = config_from_dict({"task": {"steps": 100, "eval_every": 10}, "compare": {"arms": [arm]}})
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        validate_compare(config)


def test_grid_expansion_and_defaults():
    from lrservice.compare.arms import eval_specs, tune_specs
    from lrservice.config import config_from_dict

    config = config_from_dict({"task": {"steps": 100, "eval_every": 10}, "compare": {
        "tune_seeds": [7, 8], "seeds": [0, 1, 2],
        "arms": [{"name": "s", "kind": "step", "params": {"step_size": 50}, "grid": {"lr": [0.1, 0.01], "gamma": [0.5,
                                                                                                                  0.1]}},
                 {"name": "cos", "kind": "cosine", "params": {"lr": 0.01}}]}})
    specs = tune_specs(config, "r")
    assert [s["arm"] for s in specs] == ["s"]  # one trial per tuned arm; the fixed cosine arm is not tuned
    children = specs[0]["children"]
    assert len(children) == 2 * 2 * 2  # lr x gamma x tune seeds, one child each
    assert {(c["params"]["lr"], c["params"]["gamma"], c["seed"]) for c in children} == {
        (lr, g, seed) for lr in (0.1, 0.01) for g in (0.5, 0.1) for seed in (7, 8)}
    ev = eval_specs(config, "r", {"s": {"lr": 0.01, "gamma": 0.5, "step_size": 50}})
    assert [(s["arm"], [c["seed"] for c in s["children"]]) for s in ev] == [("s", [0, 1, 2]), ("cos", [0, 1, 2])]
    assert all(c["params"] == {"lr": 0.01, "gamma": 0.5, "step_size": 50} for c in ev[0]["children"])
    assert ev[1]["children"][0]["params"] == {"lr": 0.01, "total_steps": 100}


def test_summary_pairs_every_arm_with_the_best_tuned_baseline_and_the_report_shows_it(tmp_path):
    from lrservice.compare.cost import add_costs

    steps, trials = _fixture_run(tmp_path, np.random.default_rng(1))
    gamma_tuned = {**trials.iloc[6].to_dict(), "phase": "tune", "trial_id": "tune-1", "final_val_loss": 0.005}
    trials = pd.concat([trials, pd.DataFrame([gamma_tuned])], ignore_index=True)  # gamma's tuned point beats alpha's
    (tmp_path / "config.json").write_text(json.dumps({"run_id": "r", "config": {"task": {}, "compare": {"arms": [
        {"name": "alpha", "kind": "constant", "grid": {"lr": [0.1, 0.01]}},
        {"name": "gamma", "kind": "cosine", "grid": {"lr": [0.1]}},
        {"name": "beta", "kind": "policy", "params": {"name": "FIX", "k0": 0.01}}]}}}))
    costed = add_costs(trials)
    write_parquet(to_table(costed, TRIALS_SCHEMA), tmp_path / "trials.parquet")
    build_report(tmp_path, log=lambda _: None)
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("arm")
    ev = trials[trials["phase"] == "eval"].pivot(index="seed", columns="arm", values="test_loss")
    # gamma's tuned point (0.005) beats alpha's (0.01) on the tune seeds: gamma is the reference
    assert summary.loc["gamma", "verdict"] == "reference" and summary.loc["alpha", "vs"] == "gamma"
    assert set(summary["vs_picked_on"]) == {"tune seeds"}
    assert summary.loc["beta", "diff_mean"] == pytest.approx((ev["beta"] - ev["gamma"]).mean())
    assert summary.loc["beta", "diff_ci_high"] < 0 and summary.loc["beta", "verdict"] == "better"
    assert summary.loc["alpha", "diff_ci_low"] > 0 and summary.loc["alpha", "verdict"] == "worse"
    # alpha's eval results carry its one tune trial (30 steps) on top of their own 30 steps
    assert summary.loc["alpha", "cost_steps"] == 60 and summary.loc["beta", "cost_steps"] == 30
    assert "grid 1 x 1 tune seeds x 30 steps" in summary.loc["alpha", "cost_note"]
    page = (tmp_path / "report.html").read_text()
    assert "±" in page and "final_val_loss_mean" not in page and "data:image/png;base64," in page
    assert "<td class='better'>better</td>" in page and "cost: child steps" in page
    assert "(reference)" in (tmp_path / "report.md").read_text()
    assert "Reference (Δ vs): gamma, picked on the tune seeds" in (tmp_path / "report.md").read_text() and (
        "Reference (Δ vs): gamma, picked on the tune seeds" in page)


def _rows(phase, arm, params, losses, diverged=(), seeds=None):
    """Trials rows of one arm and point; ``diverged``: indices of rows that diverged."""
    return [{"phase": phase, "arm": arm, "trial_id": f"{phase}-{arm}-{params}-{i}", "params": json.dumps(params),
             "seed": (seeds or range(100, 100 + len(losses)))[i], "diverged": i in diverged, "final_val_loss": loss,
             "test_loss": loss if loss is None else loss + 0.01, "test_accuracy": 0.9, "steps_to_target": None}
            for i, loss in enumerate(losses)]


HELD_OUT = [0, 1, 2]
EVAL_ROWS = (_rows("eval", "const", {"lr": 0.01}, [0.10, 0.11, 0.09], seeds=HELD_OUT)       # best on held-out seeds
             + _rows("eval", "cos", {"lr": 0.03}, [0.15, 0.14, 0.16], seeds=HELD_OUT)
             + _rows("eval", "ctrl", {"checkpoint": "x.pt"}, [0.12, 0.12, 0.13], seeds=HELD_OUT))


def test_the_reference_is_the_baseline_whose_tuned_point_won_on_the_tune_seeds():
    """const is best on the held-out seeds, cos on the tune seeds: cos is the reference. const's tune
    points that look better only by counting a diverged or NaN trial as a loss must not win."""
    tune = (_rows("tune", "const", {"lr": 0.01}, [0.20, 0.22])
            + _rows("tune", "const", {"lr": 1.0}, [0.05, 0.06], diverged=(0,))     # 0.055 if the diverged one counted
            + _rows("tune", "const", {"lr": 0.3}, [math.nan, 0.01])               # 0.01 if NaN were skipped
            + _rows("tune", "cos", {"lr": 0.03}, [0.18, 0.20])
            + _rows("tune", "cos", {"lr": 0.1}, [0.25, 0.30]))
    trials = pd.DataFrame(tune + EVAL_ROWS)
    summary = arm_summary(trials, baselines=["const", "cos"]).set_index("arm")
    assert summary.loc["const", "rank"] == 1  # ranked on the held-out seeds as before
    assert set(summary["vs"]) == {"cos"} and summary.loc["cos", "verdict"] == "reference"
    assert set(summary["vs_picked_on"]) == {"tune seeds"}
    ev = trials[trials["phase"] == "eval"].pivot(index="seed", columns="arm", values="test_loss")
    assert summary.loc["const", "diff_mean"] == pytest.approx((ev["const"] - ev["cos"]).mean())
    assert "Reference (Δ vs): cos, picked on the tune seeds" in format_summary(summary.reset_index())


def test_with_no_baseline_tuned_the_reference_is_picked_on_the_held_out_seeds():
    tune = _rows("tune", "zoo", {"name": "FIX", "k0": 0.01}, [0.001])  # not a baseline: no say in the reference
    trials = pd.DataFrame(tune + EVAL_ROWS)
    summary = arm_summary(trials, baselines=["const", "cos"]).set_index("arm")
    assert set(summary["vs"]) == {"const"} and summary.loc["const", "verdict"] == "reference"
    assert set(summary["vs_picked_on"]) == {"held-out seeds"}
    assert "Reference (Δ vs): const, picked on the held-out seeds" in format_summary(summary.reset_index())
    assert arm_summary(trials)["vs_picked_on"].tolist() == ["", "", ""]  # no baseline at all: nothing paired


def test_schema_columns_are_documented():
    text = (Path(__file__).resolve().parents[1] / "docs" / "compare.md").read_text()
    for name in STEPS_SCHEMA.names + TRIALS_SCHEMA.names:
        assert any(f"{a}{name}{b}" in text for a in ("| ", ", ") for b in (" |", ",")), name


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium not installed (Debian: apt-get install -y chromium)")
def test_html_report_fits_a_laptop_screen_in_a_real_browser(tmp_path):
    """Eight arms with the longest cells the table has (CI, cost) must not scroll sideways at
    1366 px: headless Chromium lays the page out and a probe script reads its scrollWidth."""
    from lrservice.compare.cost import add_costs

    rng = np.random.default_rng(2)
    names = ["constant", "step", "cosine", "cyclic", "tri2", "fix-then-cos", "controller", "pbt-population"]
    steps, trials = [], []
    for a, arm in enumerate(names):
        for seed in range(10):
            val = 0.1 + a / 50 + rng.normal(0, 0.01)
            steps += [{"run_id": "r", "phase": "eval", "arm": arm, "trial_id": f"{arm}-{seed}", "params": "{}",
                       "seed": seed,
                       "step": s, "val_loss": val * 600 / s, "lr": 0.003} for s in range(20, 601, 20)]
            trials.append({"run_id": "r", "phase": "eval", "arm": arm, "trial_id": f"{arm}-{seed}",
                           "params": json.dumps({"lr": 0.0031622776601683794, "step_size": 200, "gamma": 0.5}),
                           "seed": seed, "steps_done": 600, "diverged": False, "final_val_loss": val, "test_loss": val,
                           "test_accuracy": 1 - val, "steps_to_target": 300, "wall_s": 12345.6,
                           "target_accuracy": 0.95})
    trials += [{**trials[0], "phase": "tune", "trial_id": f"t{i}", "params": json.dumps({"lr": i})} for i in range(40)]
    write_parquet(to_table(steps, STEPS_SCHEMA), tmp_path / "steps.parquet")
    write_parquet(to_table(add_costs(pd.DataFrame(trials)), TRIALS_SCHEMA), tmp_path / "trials.parquet")
    (tmp_path / "config.json").write_text(json.dumps({"run_id": "r", "config": {"compare": {"arms": [
        {"name": "constant", "kind": "constant", "grid": {"lr": [1]}}]}}}))
    build_report(tmp_path, log=lambda _: None)
    probe = tmp_path / "probe.html"
    probe.write_text((tmp_path / "report.html").read_text().replace(
        "</body>", "<script>document.title='W'+document.documentElement.scrollWidth</script></body>"))

    def page_width(window: int) -> int:
        dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={window},768",
                              "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
        return int(re.search(r"<title>W(\d+)</title>", dom).group(1))

    assert page_width(1366) <= 1366
    assert page_width(500) > 500  # the probe does see overflow: the table cannot shrink to a phone
