"""PBT done right, end to end on a real local Ray: one population per held-out seed, every
member's every step with lineage, the deployed member as the seed's result, and its schedule
replayed from scratch trains the same model."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from helpers import record_child

from lrservice.config import config_from_dict

STEPS, EVAL_EVERY, INTERVAL, POPULATION, SEEDS = 120, 20, 40, 4, [3, 8]


def _config(tmp_path):
    return config_from_dict({
        "task": {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": STEPS, "eval_every": EVAL_EVERY,
                 "val_subset": 128},
        "compare": {
            "name": "pbt", "output_dir": str(tmp_path), "tune_seeds": [100], "seeds": SEEDS, "max_concurrent_trials": 2,
            "arms": [
                {"name": "constant", "kind": "constant", "grid": {"lr": [0.001, 0.01]}},
                {"name": "pbt", "kind": "pbt", "params": {"lr_min": 0.0003, "lr_max": 0.03, "population": POPULATION,
                                                          "interval": INTERVAL}},
            ],
        },
        "resources": {"num_cpus": 2},
    })


@pytest.fixture(scope="module")
def pbt_run(ray_local, tmp_path_factory):
    from lrservice.compare.experiment import run_compare

    tmp_path = tmp_path_factory.mktemp("pbt")
    lines: list[str] = []
    run_dir = run_compare(_config(tmp_path), log=lines.append)
    return run_dir, pd.read_parquet(run_dir / "steps.parquet"), pd.read_parquet(run_dir / "trials.parquet"), \
        pd.read_parquet(run_dir / "pbt_exploits.parquet"), lines


@pytest.mark.slow
def test_one_population_per_seed_and_members_are_not_seeds(pbt_run):
    run_dir, steps, trials, _, _ = pbt_run
    members = trials[(trials["arm"] == "pbt") & (trials["phase"] == "pbt")]
    assert sorted(members.groupby("seed").size().items()) == [(s, POPULATION) for s in SEEDS]
    assert all(sorted(g["member"]) == list(range(POPULATION)) for _, g in members.groupby("seed"))
    deployed = trials[(trials["arm"] == "pbt") & (trials["phase"] == "eval")]
    assert sorted(deployed["seed"]) == SEEDS  # the held-out seeds, nothing else
    for seed, d in deployed.groupby("seed"):
        pop = members[members["seed"] == seed]
        best = pop.loc[pop["final_val_loss"].idxmin()]
        assert d["trial_id"].iloc[0] == best["trial_id"] and d["test_loss"].iloc[0] == best["test_loss"]
        # cost: the whole population's steps
        assert d["cost_steps"].iloc[0] == POPULATION * STEPS
    summary = pd.read_csv(run_dir / "summary.csv").set_index("arm")
    assert summary.loc["pbt", "seeds"] == len(SEEDS)
    assert summary.loc["pbt", "vs"] == "constant" and summary.loc["pbt", "verdict"] in (
        "better", "no difference", "worse")


@pytest.mark.slow
def test_every_member_has_every_step_with_lineage(pbt_run):
    _, steps, trials, exploits, _ = pbt_run
    rows = steps[(steps["arm"] == "pbt") & (steps["phase"] == "pbt")]
    expected = list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    per_member = rows.groupby("trial_id")["step"].apply(list)
    assert len(per_member) == POPULATION * len(SEEDS)
    assert all(s == expected for s in per_member), per_member
    # synchronous PBT with population 4 exploits at every perturbation step before the end
    assert len(exploits) >= len(SEEDS) and set(exploits["step"]) <= set(range(INTERVAL, STEPS, INTERVAL))
    for e in exploits.itertuples():
        mine = rows[rows["trial_id"] == e.trial_id].set_index("step")
        donor = rows[rows["trial_id"] == e.parent_trial_id]
        assert donor["seed"].iloc[0] == e.seed and donor["member"].iloc[0] == e.parent_member
        assert mine.loc[e.step, "lr"] == e.old_lr
        after = mine.loc[e.step + EVAL_EVERY]
        assert after["parent_trial_id"] == e.parent_trial_id and after["parent_step"] == e.step
        assert after["lr"] == e.new_lr
        # the member continued the donor's weights: before the exploit it had its own history
        assert pd.isna(mine.loc[EVAL_EVERY, "parent_trial_id"])


@pytest.mark.slow
def test_deployed_schedule_replays_to_the_same_model(pbt_run, capsys):
    """The deployed path is one continuous run of the seed with a piecewise-constant LR, so the
    replay arm that `lrservice report` prints, trained from scratch, reaches the same validation
    loss (same single-thread float32 ops: exact up to kernel choice; we allow rel 1e-4)."""
    import torch

    from lrservice.cli import main
    from lrservice.compare.arms import check_compare, trial_spec

    run_dir, steps, trials, _, _ = pbt_run
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    text = out[out.index("PBT deployed schedules"):].split("\n", 1)[1]
    arms = yaml.safe_load(text[: text.index("[lrservice] report written")])
    assert sorted(a["name"] for a in arms) == [f"pbt-replay-s{s}" for s in SEEDS]
    data = _config(run_dir).to_dict()
    data["compare"]["arms"] = [data["compare"]["arms"][0], *arms]
    config = config_from_dict(data)
    check_compare(config)  # usable as compare arms as printed
    torch.set_num_threads(1)
    for arm in config.compare.arms[1:]:
        seed = int(arm.name.rsplit("-s", 1)[1])
        path = steps[(steps["arm"] == "pbt") & (steps["phase"] == "eval") & (steps["seed"] == seed)].sort_values("step")
        assert path["step"].tolist() == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
        rows = record_child(trial_spec(config, "replay", "eval", arm, [(arm.params, seed)]))
        assert [r["lr"] for r in rows] == pytest.approx(path["lr"].tolist(), rel=1e-12)
        deployed = trials[(trials["arm"] == "pbt") & (trials["phase"] == "eval") & (trials["seed"] == seed)]
        assert rows[-1]["val_loss"] == pytest.approx(float(deployed["final_val_loss"].iloc[0]), rel=1e-4)
    page = (run_dir / "report.html").read_text()
    assert "pbt-replay-s3" in page
