"""Search space, scaling, composition and ranking: pure functions against direct recomputation."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import torch

from lrservice.config import ConfigError, config_from_dict
from lrservice.recommend import rank, space
from lrservice.recommend.search import rows_from_reports
from lrservice.schedules import POLICY_NAMES, Composite, PolicyScheduler, policy_from_dict

LR = space.LrRange(base=1e-3, lo=1e-4, hi=3e-2)
BUDGET = 200


def test_search_covers_the_zoo_deterministically_and_within_range():
    policies = space.search_policies(34, BUDGET, LR, seed=3)
    assert sorted(p.name for p in policies) == sorted(POLICY_NAMES)
    again = space.search_policies(34, BUDGET, LR, seed=3)
    assert [p.to_dict() for p in policies] == [p.to_dict() for p in again]
    assert [p.to_dict() for p in space.search_policies(34, BUDGET, LR, seed=4)] != [p.to_dict() for p in policies]
    for p in policies:
        values = p.values(range(BUDGET))
        assert values.min() >= 0 and values.max() <= LR.hi * (1 + 1e-9), p
        assert policy_from_dict(json.loads(json.dumps(p.to_dict()))) == p
        if "l" in p.params and p.name != "NSTEP":
            assert 1 <= p.params["l"] <= BUDGET


def test_decays_are_meaningful_within_the_budget():
    rng = np.random.default_rng(0)
    for name, low, high in (("EXP", 0.01, 0.3), ("INV", 0.02, 0.3)):
        for _ in range(20):
            p = space.sample_policy(name, rng, BUDGET, LR)
            ratio = p(BUDGET) / p(0)
            assert low * (1 - 1e-9) <= ratio <= high * (1 + 1e-9), (p, ratio)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_scale_policy_scales_every_value(name):
    # Every zoo formula is homogeneous of degree 1 in (k0, k1): scaling both scales the LR.
    p = space.sample_policy(name, np.random.default_rng(1), BUDGET, LR)
    for factor in (0.1, 10.0):
        scaled = space.scale_policy(p, factor)
        np.testing.assert_allclose(scaled.values(range(BUDGET)), factor * p.values(range(BUDGET)), rtol=1e-9,
                                   atol=1e-15)


def test_recommended_composite_boundaries_restart_the_clock():
    ranked = space.search_policies(2, BUDGET, LR, seed=7)
    composites = space.compose_candidates(ranked, BUDGET, (0.5, 0.75), limit=4)
    assert len(composites) == 4
    for c in composites:
        assert isinstance(c, Composite)
        (b,) = c.boundaries
        first, second = c.segments
        assert c(b - 1) == first(b - 1)       # just before: the first segment on the global clock
        assert c(b) == second(0)              # at the boundary: the second segment's step 0
        assert c(b + 7) == second(7)
        assert c(BUDGET - 1) == second(BUDGET - 1 - b)
    anneal = composites[0]
    (b,) = anneal.boundaries
    assert b == 100
    level = float(np.mean([ranked[0](t) for t in range(b)]))
    assert anneal(b) == pytest.approx(level)  # cosine tail starts at the first phase's mean LR
    assert anneal.segments[1].params == {"k0": 0.0, "k1": pytest.approx(level), "l": BUDGET - b}
    assert anneal(BUDGET) == pytest.approx(0.0, abs=1e-15)
    assert composites[2].segments == (ranked[0], ranked[1])


def test_composite_drives_a_torch_optimizer_through_its_dict():
    c = space.compose_candidates(space.search_policies(2, BUDGET, LR, seed=7), BUDGET, (0.5,), limit=1)[0]
    snippet = json.loads(json.dumps(c.to_dict()))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = PolicyScheduler(opt, policy_from_dict(snippet))
    for t in range(BUDGET):
        assert opt.param_groups[0]["lr"] == pytest.approx(c(t), rel=1e-12)
        opt.step()
        sched.step()


def _run(candidate, seed, scale, steps, final, test=0.9, gap=0.1):
    return {"candidate": candidate, "policy": json.dumps({"name": "FIX", "k0": 0.001}), "label": candidate,
            "seed": seed, "scale": scale, "steps_to_target": steps,
            "seconds_to_target": None if steps is None else steps / 100,
            "final_val_accuracy": final, "test_accuracy": test, "train_test_loss_gap": gap}


def test_summarise_and_rank_by_hand():
    seeds, scales = [11, 12], [0.1, 10.0]
    fast = [_run("fast", 11, 1.0, 40, 0.95), _run("fast", 12, 1.0, 60, 0.93),
            _run("fast", 11, 0.1, None, 0.70), _run("fast", 11, 10.0, 30, 0.97)]
    fix = [_run("FIX-base", 11, 1.0, 100, 0.96), _run("FIX-base", 12, 1.0, 120, 0.96),
           _run("FIX-base", 11, 0.1, None, 0.8), _run("FIX-base", 11, 10.0, None, 0.5)]
    flaky = [_run("flaky", 11, 1.0, 20, 0.99), _run("flaky", 12, 1.0, None, 0.85),
             _run("flaky", 11, 0.1, None, 0.9), _run("flaky", 11, 10.0, None, 0.9)]
    s = rank.summarise("fast", fast, seeds, scales)
    assert s["reaches_all"] and s["seeds_reached"] == 2
    assert s["steps_to_target_mean"] == 50 and s["steps_to_target_std"] == pytest.approx(statistics.stdev([40, 60]))
    assert s["final_val_accuracy_mean"] == pytest.approx(0.94)
    assert s["acc_delta_x0.1"] == pytest.approx(0.70 - 0.95) and s["acc_delta_x10"] == pytest.approx(0.97 - 0.95)
    assert s["acc_delta_worst"] == pytest.approx(-0.25)
    summaries = [rank.summarise(n, r, seeds, scales) for n, r in (("flaky", flaky), ("FIX-base", fix), ("fast", fast))]
    ranked = rank.rank(summaries)
    assert [r["candidate"] for r in ranked] == ["fast", "FIX-base", "flaky"]  # flaky misses seed 12
    assert [r["rank"] for r in ranked] == [1, 2, 3]
    assert rank.speedup(ranked[1], ranked[0]) == pytest.approx(110 / 50)
    assert "2.20x faster" in rank.verdict(ranked[1], ranked[0], 0.9)
    assert rank.speedup(ranked[1], ranked[2]) is None
    only_fix = rank.rank([summaries[1], summaries[0]])
    assert only_fix[0]["candidate"] == "FIX-base"
    assert rank.verdict(only_fix[0], only_fix[0], 0.9).startswith("Nothing beat FIX")
    with pytest.raises(ValueError, match="seed"):
        rank.summarise("fast", fast[1:], seeds, scales)


def test_rows_from_reports_recomputes_cost():
    run = {"candidate": "x", "label": "x", "policy": {"name": "FIX", "k0": 0.001}, "seed": 1, "scale": 1.0}
    reports = [{"step": 10 * i, "val_accuracy": acc, "val_loss": 1.0, "train_loss": 1.0, "lr": 0.001,
                "elapsed_s": 0.5 * i, "diverged": False, "final": False} for i, acc in enumerate([0.5, 0.8, 0.91, 0.85],
                                                                                               1)]
    steps, row = rows_from_reports("search", run, "t1", reports, 0.9)
    assert len(steps) == 4 and row["steps_to_target"] == 30 and row["seconds_to_target"] == 1.5
    assert not row["completed"] and row["steps_done"] == 40 and row["best_val_accuracy"] == 0.91
    diverged = reports[:1] + [{**reports[1], "diverged": True, "val_accuracy": 0.1, "final": True}]
    _, row = rows_from_reports("search", run, "t2", diverged, 0.9)
    assert row["diverged"] and row["steps_to_target"] is None and row["final_val_accuracy"] == 0.0
    assert not row["completed"]


def test_recommend_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"recommend\.metric: 'acc'.*val_accuracy, val_loss"):
        config_from_dict({"recommend": {"metric": "acc"}})
    with pytest.raises(ConfigError, match=r"recommend\.compose_fractions\[1\]"):
        config_from_dict({"recommend": {"compose_fractions": [0.5, 1.0]}})
    with pytest.raises(ConfigError, match=r"recommend\.base_lr"):
        config_from_dict({"recommend": {"base_lr": 1.0, "lr_max": 0.1}}).recommend.lr_range("adam")
    assert config_from_dict({}).recommend.lr_range("adam") == (1e-3, 1e-4, 3e-2)
    assert math.isclose(config_from_dict({}).recommend.lr_range("sgd")[0], 1e-2)


def test_cli_rejects_bad_target(tmp_path, capsys):
    from lrservice.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: {dataset: digits}\n")
    assert main(["recommend", "--config", str(cfg), "--target-accuracy", "1.5", "--budget", "100"]) == 2
    assert "recommend.target_accuracy: 1.5" in capsys.readouterr().err
