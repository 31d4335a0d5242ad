"""An ensemble export (``controller.across_runs: ensemble``): several runs' policies acting on the mean of their
action probabilities, each through its own frozen normaliser.

References are independent of the ensemble code: probabilities computed by hand from hand-made logits, and
each member loaded on its own as an ordinary one-actor controller."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import linear_controller

from lrservice.config import ConfigError
from lrservice.control.checkpoint import ensemble_payload, load_export
from lrservice.control.controller import LearnedController

# Three discrete factors over the invariant features (4 columns) and no envelope: no level column.
RULES = {"features": "invariant", "factors": [0.5, 1.0, 2.0], "action_every": 10, "envelope": "none"}
COLUMNS = 4


def _member(tmp_path, name: str, weight, bias, mean=None, std=None) -> dict:
    """A hand-made one-actor export (its payload), optionally with its own normaliser statistics."""
    path = tmp_path / f"{name}.pt"
    linear_controller(path, RULES, torch.as_tensor(weight, dtype=torch.float32),
                      torch.as_tensor(bias, dtype=torch.float32))
    payload = load_export(path)
    if mean is not None:
        payload["normaliser"]["mean"] = torch.as_tensor(mean, dtype=torch.float64)
        payload["normaliser"]["std"] = torch.as_tensor(std, dtype=torch.float64)
        torch.save(payload, path)
    return payload


def _saved(tmp_path, payload: dict) -> LearnedController:
    path = tmp_path / "ensemble.pt"
    torch.save(payload, path)
    return LearnedController.from_checkpoint(path)


def test_an_ensemble_acts_on_the_mean_of_its_members_action_probabilities(tmp_path):
    # Member A is sure of x1 (keep); member B splits between x0.5 and x2. The mean probability is highest for
    # keep (0.5 + ~0); the mean of the logits would choose x0.5, and a member's own choice differs from it.
    zero = np.zeros((3, COLUMNS))
    a = _member(tmp_path, "a", zero, [0.0, 10.0, 0.0])
    b = _member(tmp_path, "b", zero, [0.5, -20.0, 0.0])
    ensemble = _saved(tmp_path, ensemble_payload([a, b], {"across_runs": "ensemble"}))

    def softmax(z):
        e = np.exp(np.asarray(z) - max(z))
        return e / e.sum()

    by_hand = (softmax([0.0, 10.0, 0.0]) + softmax([0.5, -20.0, 0.0])) / 2
    rows = np.zeros((2, COLUMNS), dtype=np.float32)
    np.testing.assert_allclose(ensemble.action_probabilities(rows), [by_hand, by_hand], rtol=1e-6)
    assert list(ensemble.actions(rows)) == [int(np.argmax(by_hand))] * 2 == [1, 1]
    assert np.argmax(np.add([0.0, 10.0, 0.0], [0.5, -20.0, 0.0])) == 0  # the logits' mean would differ
    assert LearnedController(b).actions(rows)[0] == 0
    # What only one policy has is refused, not answered for the first member.
    for read in (lambda: ensemble.network, lambda: ensemble.normalise(rows)):
        with pytest.raises(ValueError, match="ensemble of 2 policies"):
            read()

    # One decision, as next_lr makes it: x1 keeps the LR.
    assert ensemble.next_lr(np.full(7, 0.5, dtype=np.float32), 3e-3, progress=0.5) == pytest.approx(3e-3)


def test_each_member_normalises_with_its_own_statistics(tmp_path):
    rng = np.random.default_rng(0)
    members = [_member(tmp_path, f"m{i}", rng.normal(size=(3, COLUMNS)), rng.normal(size=3),
                       mean=rng.normal(size=COLUMNS), std=rng.uniform(0.5, 2.0, size=COLUMNS)) for i in range(3)]
    ensemble = _saved(tmp_path, ensemble_payload(members, {"across_runs": "ensemble"}))
    rows = rng.normal(size=(50, COLUMNS)).astype(np.float32)
    alone = [LearnedController(m).action_probabilities(rows) for m in members]
    np.testing.assert_allclose(ensemble.action_probabilities(rows), np.mean(alone, axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ensemble.actions(rows), np.mean(alone, axis=0).argmax(axis=1))
    # The members disagree on some rows, or this would not tell an ensemble from its first member.
    assert (alone[0].argmax(axis=1) != ensemble.actions(rows)).any()


def test_the_ensemble_export_records_every_member_and_what_they_cost_together(tmp_path):
    zero = np.zeros((3, COLUMNS))
    members = [_member(tmp_path, f"m{i}", zero, [0.0, float(i), 0.0]) for i in range(3)]
    for i, m in enumerate(members):
        m["training"].update(iteration=8 * (i + 1), child_steps=1000.0 * (i + 1), episodes=10.0, env_steps=5.0)
    payload = ensemble_payload(members, {"across_runs": "ensemble", "train_seeds": [1, 2, 3]})
    assert payload["training"]["child_steps"] == 6000.0 and payload["training"]["episodes"] == 30.0
    assert payload["training"]["iteration"] == 24 and payload["training"]["members"] == 3
    assert [m["training"]["iteration"] for m in payload["members"]] == [8, 16, 24]
    assert "policy" not in payload and payload["selection"]["train_seeds"] == [1, 2, 3]
    assert len(_saved(tmp_path, payload).actors) == 3


def test_members_of_different_recipes_do_not_make_an_ensemble(tmp_path):
    zero = np.zeros((3, COLUMNS))
    a = _member(tmp_path, "a", zero, [0.0, 1.0, 0.0])
    b = _member(tmp_path, "b", zero, [0.0, 1.0, 0.0])
    b["controller"] = {**b["controller"], "factors": [0.8, 1.0, 1.25]}
    with pytest.raises(ValueError, match="differ in features or actions"):
        ensemble_payload([a, b], {})
    with pytest.raises(ValueError, match="at least two members"):
        ensemble_payload([a], {})


def test_an_ensemble_of_continuous_policies_is_refused_at_load(tmp_path):
    zero = np.zeros((2, COLUMNS))
    a = _member(tmp_path, "a", zero, [0.0, 0.0])
    a["controller"] = {**RULES, "factors": [], "action_space": "continuous", "factor": 2.0}
    payload = ensemble_payload([a, a], {})
    with pytest.raises(ConfigError, match="an ensemble of continuous policies"):
        _saved(tmp_path, payload)
