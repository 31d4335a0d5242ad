"""The recommender end to end on digits with real Ray Tune: the report must agree with its Parquet rows.

The outcome (which policy wins, whether anything beats FIX) is not fixed; what is checked is
that every claim in the result is what the files say, recomputed independently.
"""

from __future__ import annotations

import json
import statistics

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from lrservice.config import ConfigError, config_from_dict
from lrservice.recommend.search import REFERENCE, run_recommend
from lrservice.schedules import PolicyScheduler, policy_from_dict

BUDGET = 150
SEEDS = [11, 12]
SCALES = [0.1, 10.0]
TARGET = 0.9


def _config(tmp_path):
    return config_from_dict({
        "task": {"dataset": "digits", "model": "mlp", "batch_size": 32, "eval_every": 10, "val_subset": 128},
        "recommend": {"name": "digits-e2e", "output_dir": str(tmp_path), "target_accuracy": TARGET, "budget": BUDGET,
                      "num_samples": 6, "top_k": 1, "verify_seeds": SEEDS, "lr_scales": SCALES,
                      "num_composites": 1, "compose_fractions": [0.5]},
    })


@pytest.fixture(scope="module")
def recommendation(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recommend")
    lines: list[str] = []
    config = _config(tmp)
    result = run_recommend(config, log=lines.append)
    return config, result, lines


def _first_reach(curve, target):
    for step, acc in curve:
        if acc >= target:
            return step
    return None


@pytest.mark.slow
def test_claims_match_parquet(recommendation):
    config, result, lines = recommendation
    run_dir = result.run_dir
    steps = pq.read_table(run_dir / "steps.parquet").to_pandas()
    runs = pq.read_table(run_dir / "runs.parquet").to_pandas()
    cands = pq.read_table(run_dir / "candidates.parquet").to_pandas().sort_values("rank")

    assert set(runs["stage"]) == {"search", "compose", "verify"}
    search = runs[runs.stage == "search"]
    assert len(search) == 6 + 1 and REFERENCE in set(search.candidate)
    assert (search.steps_done < BUDGET).any(), "ASHA stopped no search trial early"
    assert (runs[runs.stage == "verify"].steps_done == BUDGET).all()

    # steps-to-target of every run, recomputed from its curve
    for _, run in runs.iterrows():
        curve = steps[steps.trial_id == run.trial_id].sort_values("step")
        expect = _first_reach(zip(curve.step, curve.val_accuracy), TARGET)
        missing = run.steps_to_target is None or run.steps_to_target != run.steps_to_target  # None or NaN
        got = None if missing else int(run.steps_to_target)
        assert got == expect, (run.candidate, run.seed, run.scale)
        assert curve.step.max() == run.steps_done

    # candidate summaries, recomputed from the verify runs
    verify = runs[runs.stage == "verify"]
    assert len(cands) == 1 + 1 and REFERENCE in set(cands.candidate)
    for _, c in cands.iterrows():
        mine = verify[(verify.candidate == c.candidate) & (verify.scale == 1.0)].set_index("seed").loc[SEEDS]
        reached = [float(s) for s in mine.steps_to_target if s == s and s is not None]
        assert c.reaches_all == (len(reached) == len(SEEDS)) and c.seeds_reached == len(reached)
        if reached:
            assert c.steps_to_target_mean == pytest.approx(statistics.fmean(reached))
        assert c.final_val_accuracy_mean == pytest.approx(statistics.fmean(mine.final_val_accuracy))
        base = mine.loc[SEEDS[0]].final_val_accuracy
        for s in SCALES:
            scaled = verify[(verify.candidate == c.candidate) & (verify.scale == s)]
            assert len(scaled) == 1 and int(scaled.seed.iloc[0]) == SEEDS[0]
            assert c[f"acc_delta_x{s:g}"] == pytest.approx(scaled.final_val_accuracy.iloc[0] - base)
            unscaled = policy_from_dict(json.loads(c.policy))
            assert policy_from_dict(json.loads(scaled.policy.iloc[0]))(5) == pytest.approx(s * unscaled(5))

    # ranking order and the verdict against FIX
    keys = [(not r.reaches_all, -r.seeds_reached,
             r.steps_to_target_mean if r.steps_to_target_mean == r.steps_to_target_mean else float("inf"),
             -r.final_val_accuracy_mean) for _, r in cands.iterrows()]
    assert keys == sorted(keys)
    best, fix = cands.iloc[0], cands[cands.candidate == REFERENCE].iloc[0]
    assert result.best["candidate"] == best.candidate
    if best.reaches_all and fix.reaches_all:
        assert result.speedup == pytest.approx(fix.steps_to_target_mean / best.steps_to_target_mean)
        faster = best.candidate != REFERENCE and result.speedup > 1
        assert ("faster" in result.verdict) == faster
        assert result.verdict.startswith("Nothing beat FIX") == (not faster)
    else:
        assert result.speedup is None
    assert any(result.verdict in line for line in lines)
    assert any(line.startswith("[lrservice] stage search") for line in lines)
    assert (run_dir / "report.md").read_text().count("|") > 10


@pytest.mark.slow
def test_recommended_snippet_is_a_compare_arm_and_a_torch_scheduler(recommendation):
    config, result, _ = recommendation
    doc = yaml.safe_load((result.run_dir / "recommended.yaml").read_text())
    (arm,) = doc["compare"]["arms"]
    assert arm["kind"] == "policy"
    merged = config_from_dict({"compare": {"arms": [arm]}})  # valid as a compare arm
    assert merged.compare.arms[0].params == arm["params"]
    policy = policy_from_dict(arm["params"])
    assert policy.to_dict() == json.loads(result.best["policy"])
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    sched = PolicyScheduler(opt, policy_from_dict(arm["params"]))
    for t in range(BUDGET):
        assert opt.param_groups[0]["lr"] == pytest.approx(policy(t), rel=1e-12)
        opt.step()
        sched.step()


@pytest.mark.slow
def test_resume_skips_finished_stages_and_refuses_to_clobber(recommendation):
    config, result, _ = recommendation
    with pytest.raises(ConfigError, match="recommend.name"):
        run_recommend(config, log=lambda line: None)
    lines: list[str] = []
    again = run_recommend(config, resume=True, log=lines.append)
    assert sum("already complete" in line for line in lines) == 3
    assert [c["candidate"] for c in again.ranked] == [c["candidate"] for c in result.ranked]
    assert again.verdict == result.verdict
