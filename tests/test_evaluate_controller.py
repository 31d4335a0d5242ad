"""evaluate-controller end to end on a tiny task, against independent recomputations.

The controller is a hand-made export (random actor weights, the documented format), so the
test needs no PPO run: what is checked is the protocol — tuning picks the grid point with the
lowest mean validation loss, the controller's runs equal a plain ChildTrainer loop driven by
``LearnedController.next_lr``, and the paired differences in the summary equal the per-seed
differences recomputed from runs.parquet. Deployment under an envelope too: the scheduler and
a Tune controller arm keep the controller's level across a save and restore; with ``anchored``
features they keep the run's first validation loss the same way.
"""

from __future__ import annotations

import dataclasses
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import HALF, anchored_controller, record_child

from lrservice.child.trainer import ChildTrainer, load_task_data
from lrservice.cli import main
from lrservice.config import config_from_dict
from lrservice.control.checkpoint import EXPORT_FORMAT, EXPORT_VERSION
from lrservice.control.controller import ControllerScheduler, LearnedController
from lrservice.control.evaluate import run_controller
from lrservice.stats import compare_paired

TASK = {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": 40, "val_subset": 64, "device": "cpu"}
CONTROLLER = {"features": "extended", "factors": [0.5, 1.0, 2.0], "action_every": 10,
              "initial_lrs": [0.01, 0.001]}
EVALUATE = {"tune_seeds": [5, 6], "seeds": [1, 2, 3], "constant_grid": [0.001, 0.01], "cosine_grid": [0.003, 0.03],
            "rivals": [{"name": "wsd", "kind": "wsd", "grid": {"lr": [0.003, 0.03]}},
                       {"name": "sf", "kind": "schedule_free", "params": {"warmup": 5}, "grid": {"lr": [0.003, 0.03]}}]}


def _export(path, seed=0, controller=CONTROLLER):
    torch.manual_seed(seed)
    n = 11 + (controller.get("envelope", "none") != "none")  # extended features, and the level under an envelope
    sizes = [n, 32, 32, 3]
    layers = [{"weight": torch.randn(o, i) * 0.5, "bias": torch.randn(o) * 0.5} for i, o in zip(sizes, sizes[1:])]
    payload = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
               "task": TASK, "controller": controller, "features": [],
               "normaliser": {"mean": torch.zeros(n, dtype=torch.float64), "std": torch.ones(n, dtype=torch.float64),
                              "clip": 10.0, "eps": 1e-8, "count": 0},
               "policy": {"activation": "tanh", "layers": layers},
               "training": {"iteration": 0, "env_steps": 0.0, "child_steps": 1234.0, "episodes": 0.0}}
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("variant", ["none", "cosine", "warmup", "anchored"])
def test_controller_runs_equal_a_plain_child_trainer_loop(tmp_path, variant):
    """``none``/``cosine``: the envelope of a random export (``warmup``: cosine after a 30% warmup, where a
    run's first LR in force is not its initial LR); ``anchored``: the hand-made anchored controller,
    whose LRs are also derived by hand from the loop's observations (x2 while the validation loss is above
    half the first, /2 after)."""
    if variant == "anchored":
        ctrl = anchored_controller(tmp_path / "a.pt")
    else:
        envelope = {"envelope": "cosine", "envelope_warmup": 0.3} if variant == "warmup" else {"envelope": variant}
        ctrl = LearnedController.from_checkpoint(_export(tmp_path / "c.pt", controller={**CONTROLLER, **envelope}))
    task = config_from_dict({"task": TASK}).task
    data = load_task_data(task)
    runs = run_controller(ctrl, task, data, [(0.01, 1), (0.001, 2)])
    for run in runs:
        ctrl.reset()
        trainer = ChildTrainer(task, data=data)
        trainer.reset(run.initial_lr, run.seed)
        lrs, by_hand, first = [], [], None
        while trainer.step < task.steps:
            feats, _ = trainer.observe()
            first = feats[1] if first is None else first
            by_hand.append((by_hand[-1] if by_hand else trainer.lr) * (0.5 if math.log(feats[1] / first) < HALF else 2))
            trainer.lr = ctrl.next_lr(feats, trainer.lr, progress=trainer.step / task.steps)
            lrs.append(trainer.lr)
            trainer.train_steps(ctrl.action_every)
        assert run.lrs == pytest.approx(lrs, rel=1e-9)
        if variant == "anchored":
            assert lrs == pytest.approx(by_hand, rel=1e-12)
            assert set(np.round(np.diff(np.log2([run.initial_lr, *lrs])))) == {1.0, -1.0}  # the anchor was crossed
        assert run.lr_every == ctrl.action_every and len(run.lrs) * run.lr_every == task.steps  # where each LR sits
        if variant == "cosine":  # the last block (steps 30..40) runs at the level times (1 + cos(0.75 pi)) / 2
            assert lrs[-1] == pytest.approx(ctrl.level * (1 + math.cos(0.75 * math.pi)) / 2, rel=1e-9)
        assert run.val_loss == pytest.approx(trainer.evaluate("val").loss, rel=1e-3)
        assert run.test_accuracy == pytest.approx(trainer.evaluate("test").accuracy, abs=1 / 359 + 1e-9)


def test_scheduler_under_an_envelope_keeps_its_level_across_a_state_dict_round_trip(tmp_path):
    """A cosine-envelope controller as a torch LRScheduler: LR = level * envelope, and the level
    (not recoverable from the LR in force) is in the state dict, so a resumed run continues exactly."""
    ctrl = LearnedController.from_checkpoint(_export(tmp_path / "c.pt", controller={**CONTROLLER,
                                                                                    "envelope": "cosine"}))
    task = config_from_dict({"task": TASK}).task
    data = load_task_data(task)
    trainer = ChildTrainer(task, data=data)
    trainer.reset(0.01, 3)
    trainer.train_steps(5)
    features, _ = trainer.observe()  # fixed features: the LR path then depends on the scheduler's state alone

    def run(steps, state=None):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
        scheduler = ControllerScheduler(optimizer, ctrl, lambda: features, total_steps=task.steps)
        if state is not None:
            scheduler.load_state_dict(state)  # puts the saved LR back in force too
            assert optimizer.param_groups[0]["lr"] == state["_last_lr"][0]
        while scheduler.last_epoch < steps:
            optimizer.step()
            scheduler.step()
        return scheduler

    whole = run(task.steps)
    assert whole.get_last_lr()[0] == pytest.approx(whole.level * (1 + math.cos(0.75 * math.pi)) / 2, rel=1e-9)
    state = run(25).state_dict()
    assert state["level"] is not None and "controller" not in state
    resumed = run(task.steps, state)
    assert resumed.level == whole.level and resumed.get_last_lr() == pytest.approx(whole.get_last_lr(), rel=1e-12)
    forgetful = run(task.steps, {**state, "level": None})  # the level read back from the LR in force: wrong
    assert forgetful.get_last_lr() != pytest.approx(whole.get_last_lr(), rel=1e-6)


def test_scheduler_keeps_the_first_validation_loss_across_a_state_dict_round_trip(tmp_path):
    """An ``anchored`` controller as a torch LRScheduler: the run's first validation loss is in the state
    dict, so a run resumed at step 25 decides at step 30 against step 0's loss, not step 30's.

    The observed validation loss is 2.3 exp(-s / 10) after s steps, so the anchor column is -s / 10: the
    hand-made controller doubles at step 0 and halves at 10, 20 and 30 (below log 1/2)."""
    ctrl = anchored_controller(tmp_path / "a.pt")
    done = [0]

    def observe():
        return np.array([0.5, 2.3 * math.exp(-done[0] / 10), 1.0, 0.1, 0.0, 0.01, 1e-3], dtype=np.float32)

    def run(steps, state=None):
        done[0] = 0 if state is None else state["last_epoch"]
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        scheduler = ControllerScheduler(optimizer, ctrl, observe, total_steps=40)
        if state is not None:
            scheduler.load_state_dict(state)
        lrs = []
        while scheduler.last_epoch < steps:
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            done[0] += 1
            scheduler.step()
        return scheduler, lrs

    whole, lrs = run(40)
    assert lrs == pytest.approx([2e-3] * 10 + [1e-3] * 10 + [5e-4] * 10 + [2.5e-4] * 10, rel=1e-12)
    state = run(25)[0].state_dict()
    assert state["first_val_loss"] == pytest.approx(2.3, rel=1e-6)
    resumed, tail = run(40, state)
    assert tail == pytest.approx(lrs[25:], rel=1e-12)
    _, forgetful = run(40, {**state, "first_val_loss": None})  # anchored on step 30's loss instead: x2
    assert forgetful[5:] == pytest.approx([1e-3] * 10, rel=1e-12)


@pytest.mark.parametrize("variant", ["cosine", "anchored"])
def test_controller_arm_resumes_from_a_checkpoint_identically(tmp_path, variant):
    """A Tune trial's controller arm (compare) saves the controller's run state with its checkpoint (the
    level under an envelope, the first validation loss with ``anchored`` features): resumed at step 20,
    it reports the same rows as the uninterrupted run. The hand-made anchored controller halves at steps
    20 and 30 only while it anchors on step 0's loss (anchored on the restore step's, it would double)."""
    from lrservice.compare.arms import trial_spec
    from lrservice.config import ArmConfig, RunConfig

    if variant == "anchored":
        path = str(anchored_controller(tmp_path / "a.pt").checkpoint)
    else:
        path = str(_export(tmp_path / "c.pt", controller={**CONTROLLER, "envelope": "cosine"}))
    config = RunConfig(task=dataclasses.replace(config_from_dict({"task": TASK}).task, eval_every=10))
    config = dataclasses.replace(config, compare=dataclasses.replace(config.compare, checkpoint_every=20))
    spec = trial_spec(config, "run-test", "eval", ArmConfig("ctrl", "controller"),
                      [({"checkpoint": path, "lr": 0.01}, 0)])
    saved = {}
    rows = record_child(spec, on_checkpoint=lambda step, d: saved.setdefault(
        step, shutil.copytree(d, tmp_path / f"ckpt-{step}")))
    resumed = record_child(spec, restore_dir=saved[20])
    assert [r["step"] for r in resumed] == [30, 40]
    for a, b in zip(rows[2:], resumed):
        assert (a["lr"], a["val_loss"]) == (b["lr"], b["val_loss"]), a["step"]
    if variant == "anchored":
        assert [r["lr"] for r in rows] == pytest.approx([0.02, 0.01, 0.005, 0.0025], rel=1e-12)
    else:  # a checkpoint written before run_state (the levels alone) resumes the same
        from lrservice.compare.trainable import CHECKPOINT_FILE

        old = shutil.copytree(saved[20], tmp_path / "old-format")
        state = torch.load(old / CHECKPOINT_FILE, weights_only=False)
        state["runner"]["levels"] = [c["level"] for c in state["runner"].pop("controllers")]
        torch.save(state, old / CHECKPOINT_FILE)
        assert [(r["lr"], r["val_loss"]) for r in record_child(spec, restore_dir=old)] == \
            [(r["lr"], r["val_loss"]) for r in resumed]


def test_cli_writes_tuned_paired_evidence(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"task": TASK, "controller": CONTROLLER, "evaluate": {**EVALUATE, "seeds": [9]}}))
    ctrl = _export(tmp_path / "ctrl.pt")
    out = tmp_path / "out"
    seeds = f"{EVALUATE['seeds'][0]}-{EVALUATE['seeds'][-1]}"  # --seeds replaces the config's held-out seeds
    assert main(["evaluate-controller", "--config", str(cfg), "--controller", f"mine={ctrl}", "--output", str(out),
                 "--seeds", seeds]) == 0
    printed = capsys.readouterr().out
    assert "tuned constant:" in printed and "| mine |" in printed
    assert printed.count("[lrservice] children: batched (mlp fast path)\n") == 1
    runs = pd.read_parquet(out / "runs.parquet")
    summary = pd.read_parquet(out / "summary.parquet")
    # tuning: each rival's LR is the grid point with the lowest mean validation loss on the tune seeds, each
    # child trained alone here (ChildTrainer under the kind's own scheduler or optimizer), not in the pool
    from lrservice.kinds import get_kind

    config = config_from_dict({"task": TASK})
    task, data = config.task, load_task_data(config.task)

    def alone(kind, params, seed):
        k = get_kind(kind)
        params = k.resolve(params, config)
        trainer = ChildTrainer(task, data=data)
        trainer.reset(k.initial_lr(params), seed, optimizer_factory=k.optimizer_factory(task, params))
        sched = k.scheduler(trainer.optimizer, params)
        trainer.train_steps(task.steps, after_step=(lambda s, loss: sched.step()) if sched else None)
        return trainer.evaluate("val").loss

    grids = {"constant": ("constant", {}, EVALUATE["constant_grid"]), "cosine": ("cosine", {}, EVALUATE["cosine_grid"]),
             **{r["name"]: (r["kind"], r.get("params", {}), r["grid"]["lr"]) for r in EVALUATE["rivals"]}}
    best_mean = {}
    for name, (kind, fixed, grid) in grids.items():
        means = {lr: np.mean([alone(kind, {**fixed, "lr": lr}, s) for s in EVALUATE["tune_seeds"]]) for lr in grid}
        pick = min(means, key=means.get)
        best_mean[name] = means[pick]
        assert runs[runs.arm == name].initial_lr.unique().tolist() == [pick], name
        assert means[pick] == pytest.approx(min(means.values()), rel=1e-4)
    best = min(best_mean, key=best_mean.get)
    assert set(summary.best_rival) == {best}  # picked on the tune seeds
    # held-out seeds only, every arm on every seed
    assert sorted(runs.seed.unique()) == EVALUATE["seeds"]
    assert len(runs) == 4 * 3 + 2 * 3  # four rivals + the controller from two initial LRs, three seeds each
    # paired differences recomputed from the per-run rows
    cosine = runs[runs.arm == "cosine"].set_index("seed").val_loss
    for lr in CONTROLLER["initial_lrs"]:
        mine = runs[(runs.arm == "mine") & (runs.initial_lr == lr)].set_index("seed").val_loss
        expected = compare_paired(mine.to_dict(), cosine.to_dict())
        row = summary[(summary.arm == "mine") & (summary.initial_lr == lr)].iloc[0]
        assert row.dval_vs_cosine == pytest.approx(float(np.mean(mine.values - cosine.loc[mine.index].values)))
        assert (row.dval_vs_cosine_low, row.dval_vs_cosine_high) == pytest.approx((expected.ci_low, expected.ci_high))
        assert row.verdict_vs_cosine == expected.verdict
        rival = runs[runs.arm == best].set_index("seed").val_loss
        assert row.dval_vs_best == pytest.approx(float(np.mean(mine.values - rival.loc[mine.index].values)))
    assert "1,234 training (pretrained, reused)" in (out / "summary.md").read_text()
    assert (out / "lr_trajectories.png").stat().st_size > 0


def test_cli_rejects_a_missing_controller_before_any_work(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"task": TASK}))
    assert main(["evaluate-controller", "--config", str(cfg), "--controller", str(tmp_path / "nope")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no controller checkpoint there" in err[0]


def test_pretrained_controllers_resolve_by_name():
    from lrservice.control.checkpoint import pretrained_controllers, resolve_checkpoint

    shipped = pretrained_controllers()
    assert "digits-mlp" in shipped
    assert resolve_checkpoint("pretrained:digits-mlp") == shipped["digits-mlp"]
    with pytest.raises(FileNotFoundError, match="no such pretrained controller; shipped: pretrained:digits-mlp"):
        resolve_checkpoint("pretrained:nope")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits-mlp", "mnist1d-mlp"])
def test_shipped_controller_deterministic_policy_behaves(name):
    """Each shipped controller's mode (what deployment uses) anneals, and beats the constant LR it
    started from when that start is off (1e-2 too high, 1e-4 too low), on seeds it never saw."""
    from lrservice.control.evaluate import run_baselines

    ctrl = LearnedController.from_checkpoint(f"pretrained:{name}")
    task = ctrl.task
    data = load_task_data(task)
    seeds = (2000, 2001, 2002)
    starts = [(lr, s) for lr in (1e-2, 1e-4) for s in seeds]
    runs = run_controller(ctrl, task, data, starts)
    constant = run_baselines(task, data, [("constant", lr, s) for lr, s in starts])
    for run in runs:
        assert not run.diverged
        assert run.lrs[-1] < 0.1 * max(run.lrs)  # it anneals by the end of the run
    for lr in (1e-2, 1e-4):
        mine = np.mean([r.val_loss for r in runs if r.initial_lr == lr])
        const = np.mean([r.val_loss for r in constant if r.initial_lr == lr])
        assert mine < const, (lr, mine, const)


def test_comparison_cost_of_a_pretrained_or_exported_controller(tmp_path):
    """A compare arm with a shipped/exported controller reports its recorded training cost as reused."""
    from lrservice.compare.cost import controller_cost

    shipped = LearnedController.from_checkpoint("pretrained:digits-mlp").payload["training"]["child_steps"]
    cost = controller_cost("pretrained:digits-mlp", trained_here=False, action_every=10)
    assert (cost.steps, cost.note) == (0, f"pretrained ({int(shipped)} child steps), reused")
    made = controller_cost(_export(tmp_path / "c.pt"), trained_here=False, action_every=10)
    assert made.note == "pretrained (1234 child steps), reused"


def test_a_controller_run_that_diverges_is_marked_and_its_neighbour_is_not(tmp_path):
    """Divergence is per child: a start far above any sane LR blows up, one at 1e-4 does not."""
    controller = {**CONTROLLER, "factors": [2.0, 4.0, 8.0], "lr_max": 1.0e6, "initial_lrs": [1.0e5, 1.0e-4]}
    ctrl = LearnedController.from_checkpoint(_export(tmp_path / "c.pt", controller=controller))
    task = config_from_dict({"task": {**TASK, "optimizer": "sgd"}}).task
    data = load_task_data(task)
    runs = run_controller(ctrl, task, data, [(1.0e5, 1), (1.0e-4, 1)])
    trainer = ChildTrainer(task, data=data)  # the same child alone at the huge LR diverges too
    trainer.reset(1.0e5, 1)
    trainer.train_steps(ctrl.action_every)
    assert trainer.diverged
    assert [r.diverged for r in runs] == [True, False]
    assert math.isfinite(runs[1].val_loss)
