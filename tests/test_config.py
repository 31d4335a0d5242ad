"""Config loading: defaults, YAML/JSON, and errors that name field, value and allowed values."""

from __future__ import annotations

import json

import pytest

from lrservice.config import ConfigError, RunConfig, TaskConfig, config_from_dict, load_config


def test_defaults_are_valid_and_round_trip():
    cfg = RunConfig().validate()
    assert config_from_dict(cfg.to_dict()) == cfg
    assert cfg.task.dataset == "digits" and cfg.controller.hidden == (32, 32)
    assert cfg.controller.initial_lrs == (1e-2, 1e-3, 1e-4)


def test_yaml_and_json_files_load(tmp_path):
    (tmp_path / "a.yaml").write_text("task:\n  dataset: mnist\n  model: lenet5\n  steps: 50\n"
                                     "controller:\n  hidden: [16, 16]\n")
    (tmp_path / "a.json").write_text(json.dumps({"task": {"dataset": "mnist", "model": "lenet5", "steps": 50},
                                                  "controller": {"hidden": [16, 16]}}))
    a, b = load_config(tmp_path / "a.yaml"), load_config(tmp_path / "a.json")
    assert a == b
    assert a.task.model == "lenet5" and a.task.steps == 50 and a.controller.hidden == (16, 16)


@pytest.mark.parametrize("data,field,allowed", [
    ({"task": {"dataset": "mnst"}}, "task.dataset", "digits, mnist, fashion_mnist, cifar10"),
    ({"task": {"model": "vgg"}}, "task.model", "mlp, lenet5, resnet18"),
    ({"task": {"optimizer": "rmsprop"}}, "task.optimizer", "adam, sgd, momentum"),
    ({"controller": {"action_space": "box"}}, "controller.action_space", "discrete, continuous, levels"),
    ({"controller": {"reward": "sparse"}}, "controller.reward", "dense, final"),
    ({"compare": {"arms": [{"name": "a", "kind": "wobble"}]}}, "compare.arms[0].kind",
     "constant, step, cosine, cyclic, policy, warmup_cosine"),
])
def test_bad_choice_names_field_value_and_allowed(data, field, allowed):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    message = str(info.value)
    assert message.startswith(field + ":") and allowed in message


@pytest.mark.parametrize("data,needle", [
    ({"task": {"steps": 0}}, "task.steps: 0"),
    ({"task": {"steps": "ten"}}, "task.steps: 'ten' is not allowed; expected an integer"),
    ({"task": {"batch_size": True}}, "task.batch_size: True"),
    ({"task": {"bogus": 1}}, "task.bogus: unknown field; allowed fields are: dataset, dataset_args, model, model_args"),
    ({"taks": {}},
     "taks: unknown field; allowed fields are: task, controller, compare, recommend, evaluate, resources"),
    ({"controller": {"factor": 0.9}}, "controller.factor: 0.9"),
    ({"controller": {"features": "all"}}, "controller.features: 'all' is not allowed; choose one of: paper, extended"),
    ({"controller": {"reward": "log"}},
     "controller.reward: 'log' is not allowed; choose one of: dense, final, log_improvement"),
    ({"controller": {"baseline": "twins"}}, "controller.baseline: 'twins' is not allowed; choose one of: none, twin"),
    ({"controller": {"envelope": "cos"}},
     "controller.envelope: 'cos' is not allowed; choose one of: none, cosine, linear"),
    ({"controller": {"envelope_warmup": 0.2}}, "controller.envelope_warmup: is only used with an envelope"),
    ({"controller": {"envelope": "cosine", "envelope_warmup": 1.0}},
     "controller.envelope_warmup: 1.0 is not allowed; it must be a fraction of the episode in [0, 1)"),
    ({"controller": {"factors": [2.0]}}, "controller.factors: [2.0] is not allowed; give at least two factors"),
    ({"controller": {"factors": [0.5, -1.0]}}, "controller.factors[1]: -1.0"),
    ({"controller": {"action_space": "levels"}}, "controller.levels: [] is not allowed; action_space: levels needs"),
    ({"controller": {"levels": [1e-3, 1e-2]}}, "controller.levels: is only used with action_space: levels"),
    ({"controller": {"action_space": "levels", "levels": [1e-3, 0.5]}}, "controller.levels[1]: 0.5 is not allowed"),
    ({"controller": {"gae_lambda": 1.5}}, "controller.gae_lambda: 1.5"),
    ({"controller": {"twin_policy": {"name": "FIX", "k0": 0.01}}},
     "controller.twin_policy: is only used with baseline: twin"),
    ({"controller": {"tasks": [{"dataset": "nope"}]}}, "controller.tasks[0].dataset: 'nope' is not allowed"),
    ({"evaluate": {"seeds": [100, 1]}}, "evaluate.seeds: [100] are also tune_seeds"),
    ({"evaluate": {"cosine_grid": []}}, "evaluate.cosine_grid: give at least one value"),
    ({"controller": {"lr_min": 0.1, "lr_max": 0.01}}, "controller.lr_min"),
    ({"controller": {"initial_lr": 0.5}}, "controller.initial_lrs: 0.5"),
    ({"compare": {"arms": [{"name": "a", "kind": "constant"}, {"name": "a", "kind": "step"}]}}, "must be unique"),
    ({"compare": {"arms": [{"kind": "constant"}]}}, "compare.arms[0].name: required field is missing"),
    ({"compare": {"arms": [{"name": "c", "kind": "constant", "grid": {"lr": 0.1}}]}}, "compare.arms[0].grid.lr"),
])
def test_invalid_values_are_named(data, needle):
    with pytest.raises(ConfigError, match=None) as info:
        config_from_dict(data)
    assert needle in str(info.value)


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("task: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")


def test_replace_updates_sections_and_revalidates():
    cfg = RunConfig().replace(task={"steps": 20})
    assert cfg.task.steps == 20 and cfg.task.dataset == "digits"
    with pytest.raises(ConfigError, match="task.steps"):
        cfg.replace(task={"steps": -1})


def test_data_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("LRSERVICE_DATA", str(tmp_path))
    assert TaskConfig().data_path == tmp_path
    assert TaskConfig(data_dir=str(tmp_path / "x")).data_path == tmp_path / "x"
