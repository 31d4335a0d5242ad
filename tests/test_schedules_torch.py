"""Torch adapters: PolicyScheduler against the policy it wraps, its state-dict round trip,
and the four baselines (torch's own schedulers) against their zoo equivalents, stepped
with a real optimizer."""

from __future__ import annotations

import io
import json

import pytest
import torch

from lrservice.schedules import (
    BASELINES,
    Composite,
    PolicyError,
    PolicyScheduler,
    make_baseline,
    make_policy,
    policy_from_dict,
)


def _optimizer(kind="sgd", lr=0.5, groups=1):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    params = [{"params": [model.weight]}, {"params": [model.bias]}] if groups == 2 else model.parameters()
    opt = torch.optim.Adam(params, lr=lr) if kind == "adam" else torch.optim.SGD(params, lr=lr, momentum=0.9)
    return model, opt


def _train(model, opt, scheduler, steps):
    """Run ``steps`` real optimizer steps; return the lr each step used (per group)."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, generator=gen), torch.randn(8, 1, generator=gen)
    used = []
    for _ in range(steps):
        used.append([g["lr"] for g in opt.param_groups])
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        scheduler.step()
    return used


# --- PolicyScheduler -----------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        make_policy("COS", k0=0.001, k1=0.1, l=50),
        make_policy("NSTEP", k0=0.1, gamma=0.3, l=[7, 30]),
        make_policy("RSW2", k0=0.0, k1=0.05, l=9),
        Composite((make_policy("UPCOS", k0=0.0, k1=0.1, l=10), make_policy("EXP", k0=0.1, gamma=0.97)), (10,)),
    ],
    ids=["COS", "NSTEP", "RSW2", "composite"],
)
def test_policy_scheduler_sets_absolute_lr_from_the_policy(policy):
    model, opt = _optimizer(lr=123.0, groups=2)
    scheduler = PolicyScheduler(opt, policy)
    assert scheduler.get_last_lr() == [policy(0), policy(0)]
    used = _train(model, opt, scheduler, 80)
    assert used == [[policy(t), policy(t)] for t in range(80)]
    assert scheduler.last_epoch == 80
    assert scheduler.get_last_lr() == [policy(80)] * 2


def test_policy_scheduler_accepts_a_policy_dict():
    _, opt = _optimizer()
    scheduler = PolicyScheduler(opt, {"name": "FIX", "k0": 0.02})
    assert scheduler.policy == make_policy("FIX", k0=0.02)
    assert opt.param_groups[0]["lr"] == 0.02
    with pytest.raises(PolicyError):
        PolicyScheduler(opt, {"name": "FIX"})
    with pytest.raises(TypeError):
        PolicyScheduler(opt, lambda t: 0.1)


def test_policy_scheduler_state_dict_round_trip_continues_identically():
    policy = Composite((make_policy("TRI", k0=0.001, k1=0.1, l=5), make_policy("COS", k0=0.0, k1=0.05, l=40)), (20,))
    model, opt = _optimizer(kind="adam")
    scheduler = PolicyScheduler(opt, policy)
    _train(model, opt, scheduler, 13)

    state = scheduler.state_dict()
    assert state["policy"] == policy.to_dict()
    json.dumps(state["policy"])
    buffer = io.BytesIO()
    torch.save({"scheduler": state, "optimizer": opt.state_dict(), "model": model.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    model2, opt2 = _optimizer(kind="adam", lr=9.0)
    fresh = PolicyScheduler(opt2, make_policy("FIX", k0=0.7))  # a different policy: the state brings its own
    opt2.load_state_dict(saved["optimizer"])
    model2.load_state_dict(saved["model"])
    fresh.load_state_dict(saved["scheduler"])
    assert fresh.policy == policy
    assert fresh.last_epoch == scheduler.last_epoch == 13
    assert fresh.get_last_lr() == scheduler.get_last_lr()

    assert _train(model2, opt2, fresh, 30) == _train(model, opt, scheduler, 30)
    assert fresh.get_last_lr() == scheduler.get_last_lr() == [policy(43)]
    assert torch.equal(model.weight, model2.weight)


def test_policy_scheduler_resumes_with_last_epoch():
    policy = make_policy("STEP", k0=0.1, gamma=0.5, l=4)
    _, opt = _optimizer()
    PolicyScheduler(opt, policy)
    resumed = PolicyScheduler(opt, policy, last_epoch=9)
    assert resumed.last_epoch == 10
    assert resumed.get_last_lr() == [policy(10)]


# --- baselines vs their zoo equivalents ----------------------------------------------


@pytest.mark.parametrize(
    "kind,params,policy,steps",
    [
        ("constant", dict(lr=0.03), dict(name="FIX", k0=0.03), 200),
        ("step", dict(lr=0.1, step_size=25, gamma=0.5), dict(name="STEP", k0=0.1, gamma=0.5, l=25), 300),
        ("cosine", dict(lr=0.1, total_steps=150), dict(name="COS", k0=0.0, k1=0.1, l=150), 151),
        ("cosine", dict(lr=0.05, total_steps=97, eta_min=0.001), dict(name="COS", k0=0.001, k1=0.05, l=97), 98),
        (
            "cyclic",
            dict(base_lr=0.001, max_lr=0.1, step_size_up=20),
            dict(name="TRI", k0=0.001, k1=0.1, l=20),
            300,
        ),
        (
            "cyclic",
            dict(base_lr=0.001, max_lr=0.1, step_size_up=15, mode="triangular2"),
            dict(name="TRI2", k0=0.001, k1=0.1, l=15),
            300,
        ),
        (
            "cyclic",
            dict(base_lr=0.001, max_lr=0.1, step_size_up=10, mode="exp_range", gamma=0.99),
            dict(name="TRIEXP", k0=0.001, k1=0.1, gamma=0.99, l=10),
            300,
        ),
    ],
    ids=["constant", "step", "cosine", "cosine-eta-min", "cyclic-tri", "cyclic-tri2", "cyclic-exp-range"],
)
@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_torch_baseline_matches_its_zoo_policy(kind, params, policy, steps, optim):
    baseline = make_baseline(kind, **params)
    expected = policy_from_dict(policy)
    assert baseline.to_policy() == expected

    model, opt = _optimizer(kind=optim, lr=7.0)
    scheduler = baseline.scheduler(opt)
    assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
    assert opt.param_groups[0]["lr"] == pytest.approx(baseline.initial_lr)
    torch_lrs = [lrs[0] for lrs in _train(model, opt, scheduler, steps)]
    zoo_lrs = [expected(t) for t in range(steps)]
    assert torch_lrs == pytest.approx(zoo_lrs, rel=1e-9, abs=1e-12)

    # And the zoo path through PolicyScheduler gives the same trajectory.
    model2, opt2 = _optimizer(kind=optim, lr=7.0)
    ours = [lrs[0] for lrs in _train(model2, opt2, PolicyScheduler(opt2, baseline.to_policy()), steps)]
    assert ours == pytest.approx(torch_lrs, rel=1e-9, abs=1e-12)


def test_baseline_scheduler_ignores_a_stale_initial_lr():
    model, opt = _optimizer(lr=0.5)
    opt.param_groups[0]["initial_lr"] = 0.5  # left behind by an earlier scheduler
    scheduler = make_baseline("step", lr=0.2, step_size=2, gamma=0.1).scheduler(opt)
    assert [lrs[0] for lrs in _train(model, opt, scheduler, 5)] == pytest.approx([0.2, 0.2, 0.02, 0.02, 0.002])


def test_baseline_params_defaults_and_dict():
    cosine = make_baseline("cosine", lr=0.1, total_steps=100)
    assert cosine.params == {"lr": 0.1, "total_steps": 100, "eta_min": 0.0}
    assert cosine.initial_lr == 0.1
    cyclic = make_baseline("cyclic", base_lr=1e-4, max_lr=1e-2, step_size_up=250.0)
    assert cyclic.params == {"base_lr": 1e-4, "max_lr": 1e-2, "step_size_up": 250, "mode": "triangular", "gamma": 1.0}
    assert cyclic.initial_lr == 1e-4
    d = cyclic.to_dict()
    assert d["kind"] == "cyclic"
    assert make_baseline(d.pop("kind"), **d) == cyclic
    assert hash(cyclic) == hash(make_baseline("cyclic", base_lr=1e-4, max_lr=1e-2, step_size_up=250))
    assert BASELINES == ("constant", "step", "cosine", "cyclic")


@pytest.mark.parametrize(
    "kind,params,match",
    [
        ("linear", dict(lr=0.1), r"unknown baseline 'linear'; allowed: constant, step, cosine, cyclic"),
        ("step", dict(lr=0.1, step_size=10), r"step: missing parameter gamma"),
        ("constant", dict(lr=0.1, gamma=0.5), r"constant\.gamma: unexpected parameter; constant takes lr"),
        ("constant", dict(lr=0.0), r"constant\.lr: 0\.0 is not allowed"),
        ("step", dict(lr=0.1, step_size=2.5, gamma=0.5),
         r"step\.step_size: 2\.5 is not allowed; it must be an integer > 0"),
        ("step", dict(lr=0.1, step_size=0, gamma=0.5), r"step\.step_size: 0 is not allowed"),
        ("step", dict(lr=0.1, step_size=10, gamma=-1.0), r"step\.gamma: -1\.0 is not allowed"),
        ("cosine", dict(lr=0.1), r"cosine: missing parameter total_steps"),
        ("cosine", dict(lr=0.1, total_steps=10, eta_min=-1e-3), r"cosine\.eta_min: -0\.001 is not allowed"),
        ("cosine", dict(lr=float("nan"), total_steps=10), r"cosine\.lr: nan is not allowed"),
        (
            "cyclic",
            dict(base_lr=1e-4, max_lr=1e-2, step_size_up=10, mode="tri"),
            r"cyclic\.mode: 'tri' is not allowed; allowed: triangular, triangular2, exp_range",
        ),
        ("cyclic", dict(base_lr=1e-2, max_lr=1e-3, step_size_up=10), r"cyclic\.max_lr: .* must be >= base_lr"),
        ("cyclic", dict(base_lr="1e-4", max_lr=1e-2, step_size_up=10), r"cyclic\.base_lr: '1e-4' is not allowed"),
    ],
)
def test_baseline_validation_names_the_field_and_what_is_allowed(kind, params, match):
    with pytest.raises(PolicyError, match=match):
        make_baseline(kind, **params)
