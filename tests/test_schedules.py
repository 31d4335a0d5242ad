"""The policy zoo and composition: values pinned to hand-worked numbers and to an
independent numpy transcription of LRBench's formulas; purity, non-negativity, validation,
composition boundaries and dict round-trips."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from lrservice.schedules import (
    POLICIES,
    POLICY_NAMES,
    Composite,
    Policy,
    PolicyError,
    make_policy,
    policy_from_dict,
)

# k0=0.25, k1=1.25 makes the amplitude exactly 1; gamma=0.5 makes powers exact.
A = dict(k0=0.25, k1=1.25)

# (name, params, {step: expected lr}) worked by hand from the formulas in LRBench.
HAND = [
    ("FIX", dict(k0=0.25), {0: 0.25, 7: 0.25, 10**6: 0.25}),
    ("STEP", dict(k0=1.0, gamma=0.5, l=4), {0: 1.0, 3: 1.0, 4: 0.5, 7: 0.5, 8: 0.25, 13: 0.125}),
    ("NSTEP", dict(k0=1.0, gamma=0.1, l=[3, 7]), {0: 1.0, 2: 1.0, 3: 0.1, 6: 0.1, 7: 0.01, 100: 0.01}),
    ("EXP", dict(k0=2.0, gamma=0.5), {0: 2.0, 1: 1.0, 3: 0.25}),
    ("INV", dict(k0=1.0, gamma=0.5, p=2), {0: 1.0, 2: 0.25, 6: 0.0625}),
    ("POLY", dict(**A, p=2, l=4), {0: 1.25, 2: 0.5, 3: 0.3125, 4: 0.25, 10: 0.25}),
    ("SIG", dict(k0=1.0, gamma=0.5, l=4), {0: 0.11920292202211755, 4: 0.5, 8: 0.8807970779778823}),
    ("TRI", dict(**A, l=4), {0: 0.25, 2: 0.75, 4: 1.25, 6: 0.75, 8: 0.25, 9: 0.5, 12: 1.25}),
    ("TRI2", dict(**A, l=4), {0: 0.25, 2: 0.75, 4: 1.25, 8: 0.25, 10: 0.5, 12: 0.75, 20: 0.5}),
    ("TRIEXP", dict(**A, gamma=0.5, l=4), {0: 0.25, 1: 0.375, 2: 0.375, 4: 0.3125}),
    ("DTRI", dict(**A, l=4), {0: 1.25, 2: 0.75, 4: 0.25, 8: 1.25}),
    ("DTRI2", dict(**A, l=4), {0: 1.25, 2: 0.75, 4: 0.25, 6: 0.5, 8: 0.75, 16: 0.5}),
    ("DTRIEXP", dict(**A, gamma=0.5, l=4), {0: 1.25, 1: 0.625, 4: 0.25, 8: 0.25390625}),
    ("SIN", dict(**A, l=3), {0: 0.25, 1: 0.75, 3: 1.25, 5: 0.75, 6: 0.25, 7: 0.75}),
    ("SIN2", dict(**A, l=3), {1: 0.75, 3: 1.25, 7: 0.5, 9: 0.75, 13: 0.375}),
    ("SINEXP", dict(**A, gamma=0.5, l=3), {0: 0.25, 1: 0.5, 3: 0.375}),
    ("DSIN", dict(**A, l=3), {0: 1.25, 2: 0.75, 3: 0.25, 4: 0.75}),
    ("DSIN2", dict(**A, l=3), {0: 1.25, 2: 0.75, 4: 0.5, 6: 0.75, 12: 0.5}),
    ("DSINEXP", dict(**A, gamma=0.5, l=3), {0: 1.25, 2: 0.375, 3: 0.25}),
    ("COS", dict(**A, l=4), {0: 1.25, 2: 0.75, 4: 0.25, 6: 0.75, 8: 1.25}),
    ("COS2", dict(**A, l=4), {0: 1.25, 2: 0.75, 4: 0.25, 6: 0.5, 8: 0.75, 16: 0.5, 20: 0.25}),
    ("COSEXP", dict(**A, gamma=0.5, l=4), {0: 1.25, 1: 0.6767766952966369, 2: 0.375}),
    ("UPCOS", dict(**A, l=4), {0: 0.25, 2: 0.75, 4: 1.25, 8: 0.25}),
    ("UPCOS2", dict(**A, l=4), {4: 1.25, 8: 0.25, 10: 0.5, 12: 0.75, 20: 0.5}),
    ("UPCOSEXP", dict(**A, gamma=0.5, l=4), {0: 0.25, 2: 0.375, 4: 0.3125}),
    ("RSW", dict(**A, l=4), {0: 0.25, 1: 1.0, 2: 0.75, 3: 0.5, 4: 0.25, 5: 1.0}),
    ("RSW2", dict(**A, l=4), {1: 1.0, 5: 0.625, 8: 0.25, 9: 0.4375}),
    ("RSWEXP", dict(**A, gamma=0.5, l=4), {1: 0.625, 2: 0.375, 4: 0.25}),
    ("SINRSW", dict(**A, l=3), {0: 0.25, 1: 1.1160254037844386, 2: 0.75, 3: 0.25}),
    ("SINRSW2", dict(**A, l=3), {2: 0.75, 5: 0.5, 6: 0.25, 8: 0.375}),
    ("SINRSWEXP", dict(**A, gamma=0.5, l=3), {1: 0.6830127018922193, 2: 0.375}),
    ("COSRSW", dict(**A, l=4), {1: 1.1035533905932737, 2: 0.75, 3: 0.3964466094067262, 4: 0.25}),
    ("COSRSW2", dict(**A, l=4), {2: 0.75, 6: 0.5, 10: 0.375}),
    ("COSRSWEXP", dict(**A, gamma=0.5, l=4), {2: 0.375, 6: 0.2578125}),
]


def test_hand_table_covers_all_34_policies():
    assert len(POLICY_NAMES) == 34
    assert sorted(name for name, _, _ in HAND) == sorted(POLICY_NAMES)


@pytest.mark.parametrize("name,params,expected", HAND, ids=[h[0] for h in HAND])
def test_policy_matches_hand_worked_values(name, params, expected):
    policy = make_policy(name, **params)
    for t, lr in expected.items():
        assert policy(t) == pytest.approx(lr, rel=1e-12, abs=1e-12), f"{name} at t={t}"


# An independent transcription of LRBench's lr/LRfunctions.py, vectorised with numpy.
def _lrbench(name, t, k0=None, k1=None, gamma=None, p=None, l=None):
    t = np.asarray(t, dtype=np.float64)
    pi = np.pi
    tri = lambda x: (2 / pi) * np.abs(np.arcsin(np.sin(pi * x / (2 * l))))  # noqa: E731
    fd = -t / l - np.floor(-t / l) if l is not None else None
    d = (k1 - k0) if k1 is not None else None
    g = gamma**t if gamma is not None else None
    cos_down = 0.5 * (1 + np.cos(pi * t / l)) if l is not None else None
    cos_up = 0.5 * (1 + np.cos(pi * (t / l + 1))) if l is not None else None
    table = {
        "FIX": lambda: k0 + 0 * t,
        "STEP": lambda: k0 * gamma ** np.floor(t / l),
        "EXP": lambda: k0 * gamma**t,
        "INV": lambda: k0 * (1 + gamma * t) ** (-p),
        "POLY": lambda: d * np.clip(1 - t / l, 0, None) ** p + k0,
        "SIG": lambda: k0 / (1 + np.exp(-gamma * (t - l))),
        "TRI": lambda: d * tri(t) + k0,
        "TRI2": lambda: d * tri(t) / 2 ** np.floor(t / (2 * l)) + k0,
        "TRIEXP": lambda: d * tri(t) * g + k0,
        "DTRI": lambda: d * tri(t + l) + k0,
        "DTRI2": lambda: d * tri(t + l) / 2 ** np.floor((t + l) / (2 * l)) + k0,
        "DTRIEXP": lambda: d * tri(t + l) * g + k0,
        "SIN": lambda: d * np.abs(np.sin(pi * t / (2 * l))) + k0,
        "SIN2": lambda: d * np.abs(np.sin(pi * t / (2 * l))) / 2 ** np.floor(t / (2 * l)) + k0,
        "SINEXP": lambda: d * np.abs(np.sin(pi * t / (2 * l))) * g + k0,
        "DSIN": lambda: d * np.abs(np.sin(pi * (t + l) / (2 * l))) + k0,
        "DSIN2": lambda: d * np.abs(np.sin(pi * (t + l) / (2 * l))) / 2 ** np.floor((t + l) / (2 * l)) + k0,
        "DSINEXP": lambda: d * np.abs(np.sin(pi * (t + l) / (2 * l))) * g + k0,
        "COS": lambda: d * cos_down + k0,
        "COS2": lambda: d * cos_down / 2 ** np.floor((t + l) / (2 * l)) + k0,
        "COSEXP": lambda: d * cos_down * g + k0,
        "UPCOS": lambda: d * cos_up + k0,
        "UPCOS2": lambda: d * cos_up / 2 ** np.floor(t / (2 * l)) + k0,
        "UPCOSEXP": lambda: d * cos_up * g + k0,
        "RSW": lambda: d * fd + k0,
        "RSW2": lambda: d * fd / 2 ** np.floor(t / l) + k0,
        "RSWEXP": lambda: d * fd * g + k0,
        "SINRSW": lambda: d * np.sin(pi / 2 * fd) + k0,
        "SINRSW2": lambda: d * np.sin(pi / 2 * fd) / 2 ** np.floor(t / l) + k0,
        "SINRSWEXP": lambda: d * np.sin(pi / 2 * fd) * g + k0,
        "COSRSW": lambda: d * 0.5 * (1 - np.cos(pi * fd)) + k0,
        "COSRSW2": lambda: d * 0.5 * (1 - np.cos(pi * fd)) / 2 ** np.floor(t / l) + k0,
        "COSRSWEXP": lambda: d * 0.5 * (1 - np.cos(pi * fd)) * g + k0,
    }
    return table[name]()


def _lrbench_nstep(t_values, k0, gamma, l):
    """LRBench's stateful NSTEP, replayed in increasing step order as it must be."""
    cur, out = 0, []
    for t in t_values:
        if cur < len(l) and t >= l[cur]:
            cur += 1
        out.append(k0 * gamma**cur)
    return np.array(out)


PARAM_SETS = [
    dict(k0=0.001, k1=0.1, gamma=0.99, p=0.5, l=37),
    dict(k0=0.05, k1=0.01, gamma=0.999, p=3.0, l=50),  # k1 < k0: inverted shapes stay >= k1
    dict(k0=0.0, k1=1.0, gamma=1.0, p=1.0, l=10),
]


@pytest.mark.parametrize("params", PARAM_SETS)
@pytest.mark.parametrize("name", [n for n in POLICY_NAMES if n != "NSTEP"])
def test_policy_matches_lrbench_transcription(name, params):
    chosen = {key: params[key] for key in POLICIES[name].params}
    steps = np.arange(0, 400)
    ours = make_policy(name, **chosen).values(steps)
    ref = _lrbench(name, steps, **chosen)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


def test_nstep_matches_lrbench_in_order_and_is_pure_in_any_order():
    boundaries = [5, 17, 30]
    policy = make_policy("NSTEP", k0=0.1, gamma=0.5, l=boundaries)
    steps = list(range(60))
    np.testing.assert_allclose(policy.values(steps), _lrbench_nstep(steps, 0.1, 0.5, boundaries), rtol=1e-12)
    # LRBench's counter would give the decayed value here; the pure version does not.
    assert policy(50) == pytest.approx(0.1 * 0.5**3)
    assert policy(0) == 0.1
    assert policy(17) == pytest.approx(0.1 * 0.5**2)
    assert policy(16) == pytest.approx(0.1 * 0.5)
    assert make_policy("NSTEP", k0=1.0, gamma=0.1, l=[0]).values([0, 1]).tolist() == pytest.approx([0.1, 0.1])


def _example(name):
    base = dict(k0=0.002, k1=0.08, gamma=0.995, p=1.5, l=25)
    params = {key: base[key] for key in POLICIES[name].params}
    if name == "NSTEP":
        params["l"] = [10, 40, 90]
    return make_policy(name, **params)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_policy_is_pure_in_shuffled_order(name):
    policy = _example(name)
    steps = list(range(300))
    forward = [policy(t) for t in steps]
    shuffled = steps[:]
    random.Random(0).shuffle(shuffled)
    by_step = {t: policy(t) for t in shuffled}
    assert [by_step[t] for t in steps] == forward
    assert [policy(t) for t in reversed(steps)] == forward[::-1]


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_policy_is_never_negative_nor_nan(name):
    rng = random.Random(hash(name) % 1000)
    for _ in range(20):
        k0, k1 = rng.uniform(0, 0.2), rng.uniform(0, 0.2)
        gamma = rng.uniform(0.9, 1.0)
        base = dict(k0=k0, k1=k1, gamma=gamma, p=rng.uniform(0, 4), l=rng.randint(1, 200))
        params = {key: base[key] for key in POLICIES[name].params}
        if name == "NSTEP":
            params["l"] = sorted(rng.sample(range(0, 500), 3))
        if name == "SIG":
            params["gamma"] = rng.uniform(-1, 1)
        values = make_policy(name, **params).values(range(0, 2000, 7))
        assert np.all(values >= 0) and np.all(np.isfinite(values)), (name, params)


def test_poly_holds_k0_past_l_instead_of_going_negative():
    policy = make_policy("POLY", k0=0.01, k1=0.1, p=1.5, l=100)
    assert policy(99) > 0.01
    assert [policy(t) for t in (100, 101, 150, 10**6)] == [0.01] * 4
    assert make_policy("POLY", k0=0.0, k1=1.0, p=1, l=10)(11) == 0.0


def test_extremes_do_not_raise():
    assert make_policy("SIG", k0=0.1, gamma=50.0, l=10)(10**7) == pytest.approx(0.1)
    assert make_policy("SIG", k0=0.1, gamma=-50.0, l=10)(10**7) == 0.0
    assert make_policy("EXP", k0=0.1, gamma=1.5)(10**6) == math.inf
    assert make_policy("EXP", k0=0.0, gamma=1.5)(10**6) == 0.0
    assert make_policy("TRI2", k0=0.01, k1=0.1, l=1)(10**6) == pytest.approx(0.01)
    assert make_policy("COSEXP", k0=0.01, k1=0.01, gamma=2.0, l=5)(10**6) == 0.01


def test_policy_accepts_lowercase_names_and_numpy_steps():
    policy = make_policy("cos", k0=0, k1=1, l=10)
    assert policy.name == "COS"
    assert policy(np.int64(5)) == pytest.approx(0.5)
    assert isinstance(policy(3), float)


def test_policy_is_hashable_and_compares_by_value():
    a = make_policy("NSTEP", k0=0.1, gamma=0.5, l=[10, 20])
    b = Policy("NSTEP", {"k0": 0.1, "gamma": 0.5, "l": (10, 20)})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != make_policy("NSTEP", k0=0.1, gamma=0.5, l=[10, 21])


# --- validation ----------------------------------------------------------------------


def test_unknown_name_lists_all_allowed_names():
    with pytest.raises(PolicyError) as err:
        make_policy("COSINE", k0=0.0, k1=0.1, l=10)
    message = str(err.value)
    assert "COSINE" in message
    for name in POLICY_NAMES:
        assert name in message


def test_missing_and_extra_parameters_name_the_field():
    with pytest.raises(PolicyError, match=r"COS: missing parameter l; COS takes k0, k1, l"):
        make_policy("COS", k0=0.0, k1=0.1)
    with pytest.raises(PolicyError, match=r"COS\.gamma: unexpected parameter; COS takes k0, k1, l"):
        make_policy("COS", k0=0.0, k1=0.1, l=10, gamma=0.9)


@pytest.mark.parametrize(
    "name,params,field",
    [
        ("COS", dict(k0=-0.1, k1=0.1, l=10), "k0"),
        ("COS", dict(k0=0.0, k1=math.nan, l=10), "k1"),
        ("COS", dict(k0=0.0, k1=math.inf, l=10), "k1"),
        ("COS", dict(k0=0.0, k1=0.1, l=0), "l"),
        ("COS", dict(k0=0.0, k1=0.1, l=-5), "l"),
        ("COS", dict(k0="0.1", k1=0.1, l=10), "k0"),
        ("COS", dict(k0=True, k1=0.1, l=10), "k0"),
        ("STEP", dict(k0=0.1, gamma=0.0, l=10), "gamma"),
        ("EXP", dict(k0=0.1, gamma=-0.5), "gamma"),
        ("INV", dict(k0=0.1, gamma=-0.1, p=1), "gamma"),
        ("INV", dict(k0=0.1, gamma=0.1, p=-1), "p"),
        ("POLY", dict(k0=0.0, k1=0.1, p=-0.5, l=10), "p"),
        ("SIG", dict(k0=0.1, gamma=math.inf, l=10), "gamma"),
        ("NSTEP", dict(k0=0.1, gamma=0.5, l=[20, 10]), "l"),
        ("NSTEP", dict(k0=0.1, gamma=0.5, l=[10, 10]), "l"),
        ("NSTEP", dict(k0=0.1, gamma=0.5, l=[-1, 10]), "l"),
        ("NSTEP", dict(k0=0.1, gamma=0.5, l=[1.5]), "l"),
        ("NSTEP", dict(k0=0.1, gamma=0.5, l=[]), "l"),
        ("NSTEP", dict(k0=0.1, gamma=0.5, l=10), "l"),
        ("TRIEXP", dict(k0=0.1, k1=0.01, gamma=1.01, l=10), "gamma"),
    ],
)
def test_invalid_values_name_the_policy_field_and_what_is_allowed(name, params, field):
    with pytest.raises(PolicyError) as err:
        make_policy(name, **params)
    message = str(err.value)
    assert message.startswith(f"{name}.{field}: ")
    assert "not allowed" in message and ("must" in message or "give" in message)


def test_allowed_edge_values():
    assert make_policy("INV", k0=0.1, gamma=0.0, p=0.0)(100) == 0.1
    assert make_policy("SIG", k0=0.1, gamma=-0.2, l=5)(0) > make_policy("SIG", k0=0.1, gamma=-0.2, l=5)(10)
    assert make_policy("TRIEXP", k0=0.01, k1=0.1, gamma=1.01, l=10)(5) > 0
    assert make_policy("COS", k0=0.0, k1=0.1, l=2.5)(2.5) == pytest.approx(0.0, abs=1e-15)


def test_negative_step_is_rejected():
    with pytest.raises(PolicyError, match="step"):
        make_policy("FIX", k0=0.1)(-1)


def test_policy_error_is_a_value_error():
    assert issubclass(PolicyError, ValueError)


def test_every_policy_documents_its_formula():
    for spec in POLICIES.values():
        assert spec.formula and spec.formula in spec.fn.__doc__
        assert "t" in spec.formula or spec.name == "FIX"


# --- composition ---------------------------------------------------------------------


def _warmup_then_cosine():
    warmup = make_policy("UPCOS", k0=0.0, k1=0.1, l=10)
    anneal = make_policy("COS", k0=0.001, k1=0.1, l=90)
    return Composite((warmup, anneal), (10,))


def test_composite_restarts_the_clock_at_each_boundary():
    schedule = _warmup_then_cosine()
    assert schedule(0) == 0.0
    assert schedule(5) == pytest.approx(0.05)
    assert schedule(9) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 1.9)))
    assert schedule(10) == pytest.approx(0.1)  # COS at its own step 0
    assert schedule(55) == pytest.approx(0.001 + 0.099 * 0.5)  # COS at its own step 45
    assert schedule(100) == pytest.approx(0.001)


def test_composite_value_just_before_and_at_each_boundary():
    seg = [make_policy("FIX", k0=0.3), make_policy("STEP", k0=0.2, gamma=0.5, l=5), make_policy("FIX", k0=0.1)]
    schedule = Composite(seg, [7, 20])
    assert [schedule(t) for t in (0, 6, 7, 11, 12, 19, 20, 1000)] == pytest.approx(
        [0.3, 0.3, 0.2, 0.2, 0.1, 0.2 * 0.5**2, 0.1, 0.1]
    )


def test_nested_composite_and_single_segment():
    inner = _warmup_then_cosine()
    outer = Composite((inner, make_policy("FIX", k0=0.0005)), (100,))
    assert outer(55) == inner(55)
    assert outer(100) == 0.0005
    single = Composite((make_policy("FIX", k0=0.2),), ())
    assert single(0) == single(99) == 0.2


def test_composite_is_pure_in_shuffled_order():
    schedule = Composite(
        (make_policy("NSTEP", k0=0.1, gamma=0.1, l=[5]), make_policy("RSW", k0=0.0, k1=0.1, l=7)), (13,)
    )
    steps = list(range(100))
    forward = schedule.values(steps)
    random.Random(1).shuffle(steps)
    assert [schedule(t) for t in range(100)] == forward.tolist()
    assert np.array_equal(schedule.values(sorted(steps)), forward)


@pytest.mark.parametrize(
    "segments,boundaries",
    [
        (2, ()),
        (2, (10, 20)),
        (3, (20, 10)),
        (3, (10, 10)),
        (2, (0,)),
        (2, (-5,)),
        (2, (2.5,)),
        (1, (5,)),
    ],
)
def test_composite_rejects_bad_boundaries(segments, boundaries):
    with pytest.raises(PolicyError, match="compose.boundaries"):
        Composite(tuple(make_policy("FIX", k0=0.1) for _ in range(segments)), boundaries)


def test_composite_rejects_empty_and_non_policy_segments():
    with pytest.raises(PolicyError, match="at least one segment"):
        Composite((), ())
    with pytest.raises(PolicyError, match=r"compose\[1\]"):
        Composite((make_policy("FIX", k0=0.1), {"name": "FIX", "k0": 0.1}), (5,))


# --- dict round-trips ----------------------------------------------------------------


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_policy_dict_round_trip(name):
    policy = _example(name)
    d = policy.to_dict()
    assert d["name"] == name and list(d)[1:] == list(POLICIES[name].params)
    again = policy_from_dict(json.loads(json.dumps(d)))
    assert again == policy and again.to_dict() == d


def test_to_dict_format():
    assert make_policy("COS", k0=0, k1=0.1, l=100).to_dict() == {"name": "COS", "k0": 0.0, "k1": 0.1, "l": 100}
    assert make_policy("NSTEP", k0=1, gamma=0.1, l=(5, 9)).to_dict() == {
        "name": "NSTEP",
        "k0": 1.0,
        "gamma": 0.1,
        "l": [5, 9],
    }


def test_composite_dict_round_trip():
    schedule = Composite((_warmup_then_cosine(), make_policy("NSTEP", k0=0.01, gamma=0.5, l=[3, 8])), (100,))
    d = schedule.to_dict()
    assert d == {
        "compose": [
            {
                "compose": [
                    {"name": "UPCOS", "k0": 0.0, "k1": 0.1, "l": 10},
                    {"name": "COS", "k0": 0.001, "k1": 0.1, "l": 90},
                ],
                "boundaries": [10],
            },
            {"name": "NSTEP", "k0": 0.01, "gamma": 0.5, "l": [3, 8]},
        ],
        "boundaries": [100],
    }
    again = policy_from_dict(json.loads(json.dumps(d)))
    assert again == schedule and again.to_dict() == d
    assert again.values(range(200)).tolist() == schedule.values(range(200)).tolist()


def test_policy_from_dict_does_not_mutate_its_input():
    d = {"name": "cos", "k0": 0, "k1": 0.1, "l": 10}
    policy_from_dict(d)
    assert d == {"name": "cos", "k0": 0, "k1": 0.1, "l": 10}


@pytest.mark.parametrize(
    "d,match",
    [
        ({"k0": 0.1}, "no 'name'"),
        ({"name": "FIX"}, "FIX: missing parameter k0"),
        ({"name": "FIX", "k0": 0.1, "l": 3}, r"FIX\.l: unexpected"),
        ({"compose": [{"name": "FIX", "k0": 0.1}], "boundaries": [], "extra": 1}, r"compose\.extra"),
        ({"compose": [{"name": "FIX", "k0": 0.1}, {"name": "FIX", "k0": 0.2}]}, "compose.boundaries"),
        ({"compose": "FIX"}, "list of policy dicts"),
        ([("name", "FIX")], "mapping"),
    ],
)
def test_policy_from_dict_errors(d, match):
    with pytest.raises(PolicyError, match=match):
        policy_from_dict(d)


def test_policies_survive_pickling():
    import pickle

    schedule = Composite((_example("NSTEP"), _example("COSRSW2")), (50,))
    again = pickle.loads(pickle.dumps(schedule))
    assert again == schedule and again.values(range(120)).tolist() == schedule.values(range(120)).tolist()
