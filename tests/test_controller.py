"""LearnedController: loads without an Algorithm, acts deterministically, drives other tasks and plain loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lrservice.child.data import load_dataset
from lrservice.child.trainer import ChildTrainer
from lrservice.config import ConfigError, TaskConfig, config_from_dict
from lrservice.control.checkpoint import (
    EXPORT_FILE,
    MODULE_PATH,
    export_controller,
    latest_checkpoint,
    resolve_checkpoint,
)
from lrservice.control.controller import ChildObserver, ControllerScheduler, LearnedController

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # the module fixture trains PPO (~30 s)

TASK = {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": 100, "val_subset": 128, "device": "cpu"}
CONTROLLER = {"action_every": 10, "train_batch_size": 100, "minibatch_size": 50, "num_epochs": 2,
              "checkpoint_every": 1, "num_env_runners": 0}
FACTOR = 1.05
LEVELS = [1e-4, 3e-4, 1e-3, 3e-3]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A discrete controller trained one PPO iteration, untrained continuous and levels ones; Ray is shut down after."""
    import ray

    from lrservice.control.checkpoint import save_checkpoint
    from lrservice.control.ppo import build_ppo_config
    from lrservice.control.training import train_controller
    from lrservice.runtime import plan_placement

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        discrete = config_from_dict({"task": TASK, "controller": CONTROLLER})
        out = tmp_path_factory.mktemp("discrete")
        train_controller(discrete, out, iterations=1, log=lambda line: None)
        untrained = {"continuous": {"action_space": "continuous", "factor": 1.2},
                     "levels": {"action_space": "levels", "levels": LEVELS}}
        saved = {"discrete": latest_checkpoint(out), "output": out}
        for kind, rules in untrained.items():
            config = config_from_dict({"task": TASK, "controller": {**CONTROLLER, **rules}})
            algo = build_ppo_config(config, plan_placement(config.resources)).build_algo()
            try:
                saved[kind] = save_checkpoint(algo, config, tmp_path_factory.mktemp(kind), 0, 0.0)
            finally:
                algo.stop()
    finally:
        ray.shutdown()  # everything below runs without Ray: inference needs no Algorithm
    return saved


def test_loads_from_output_dir_without_ray_and_keeps_action_semantics(checkpoints):
    import ray

    assert not ray.is_initialized()
    ctrl = LearnedController.from_checkpoint(checkpoints["output"])  # an output dir means its controller.pt
    assert ctrl.checkpoint == resolve_checkpoint(checkpoints["output"]) == checkpoints["output"] / EXPORT_FILE
    assert ctrl.payload["training"]["checkpoint"] == "iter_000001"
    assert ctrl.action_every == 10 and ctrl.config.factor == FACTOR and ctrl.config.action_space == "discrete"
    # The actor is a 2x32 MLP (tanh) and a head with one logit per action.
    linears = [m for m in ctrl.network if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [32, 32, 3]
    with pytest.raises(FileNotFoundError, match="no controller checkpoint"):
        LearnedController.from_checkpoint(checkpoints["discrete"] / "nowhere")


def _rllib_module(checkpoint):
    from ray.rllib.core.rl_module.rl_module import RLModule

    return RLModule.from_checkpoint(str(resolve_checkpoint(checkpoint).joinpath(*MODULE_PATH)))


def test_observation_stats_match_rllib_filter_and_stay_frozen(checkpoints):
    from ray.rllib.connectors.env_to_module import EnvToModulePipeline, MeanStdFilter

    ckpt = resolve_checkpoint(checkpoints["discrete"])
    pipeline = EnvToModulePipeline.from_checkpoint(str(ckpt / "env_runner" / "env_to_module_connector"))
    connector = next(c for c in pipeline.connectors if isinstance(c, MeanStdFilter))
    reference = connector._filters[None]  # RLlib's own filter object, asked not to update
    ctrl = LearnedController.from_checkpoint(checkpoints["discrete"])
    assert ctrl.payload["normaliser"]["count"] == 100 + 10  # 10 episodes of 10 actions, plus each reset observation
    rng = np.random.default_rng(0)
    mean_before = ctrl.actors[0].mean.copy()
    for _ in range(5):
        x = (rng.normal(size=7) * np.array([1, 1, 5, 2, 0.01, 0.01, 0.003])).astype(np.float32)
        np.testing.assert_allclose(ctrl.normalise(x[None])[0], reference(x, update=False), rtol=1e-5, atol=1e-6)
        ctrl.next_lr(x, 1e-3)
    np.testing.assert_array_equal(ctrl.actors[0].mean, mean_before)  # frozen: acting never updates the statistics


def test_exported_controller_round_trips_and_reproduces_the_rllib_module(checkpoints, tmp_path):
    """The export (torch.load(weights_only=True), no RLlib) acts exactly as RLlib's RLModule does."""
    for kind in ("discrete", "continuous", "levels"):
        out = export_controller(checkpoints[kind], tmp_path / f"{kind}.pt")
        payload = torch.load(out, weights_only=True)
        assert payload["format"] == "lrservice-controller" and payload["version"] == 1
        ctrl = LearnedController.from_checkpoint(out)
        assert ctrl.checkpoint == out and ctrl.config.action_space == kind
        module = _rllib_module(checkpoints[kind])
        rng = np.random.default_rng(2)
        rows = np.abs(rng.normal(size=(64, 7))).astype(np.float32) * np.array([1, 1, 5, 2, 0.1, 0.1, 0.01], np.float32)
        obs = ctrl.normalise(rows)
        with torch.no_grad():
            out_module = module.forward_inference({"obs": torch.as_tensor(obs)})["action_dist_inputs"]
            out_export = ctrl.network(torch.as_tensor(obs))
        torch.testing.assert_close(out_export, out_module, rtol=1e-5, atol=1e-6)
        dist = module.get_inference_action_dist_cls().from_logits(out_module).to_deterministic().sample().numpy()
        got = ctrl.actions(rows)
        if kind != "continuous":
            np.testing.assert_array_equal(got, dist)
        else:
            np.testing.assert_allclose(got, np.clip(dist, -1, 1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="not an exported lrservice controller"):
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"not a controller")
        LearnedController.from_checkpoint(bad)


def test_discrete_next_lr_is_argmax_times_its_factor(checkpoints):
    ctrl = LearnedController.from_checkpoint(checkpoints["discrete"])
    module = _rllib_module(checkpoints["discrete"])
    rng = np.random.default_rng(1)
    for lr in (1e-4, 1e-3, 0.099):
        x = np.abs(rng.normal(size=7)).astype(np.float32)
        actor = ctrl.actors[0]
        obs = np.clip((x - actor.mean) / (actor.std + 1e-6), -10, 10).astype(np.float32)  # RLlib's SMALL_NUMBER
        with torch.no_grad():
            logits = module.forward_inference({"obs": torch.as_tensor(obs[None])})["action_dist_inputs"][0]
        expected = lr * (FACTOR, 1 / FACTOR, 1.0)[int(torch.argmax(logits))]
        assert ctrl.next_lr(x, lr) == pytest.approx(min(max(expected, 1e-5), 0.1), rel=1e-12)
        assert ctrl.next_lr(x, lr) == ctrl.next_lr(x, lr)  # deterministic
    assert ctrl.next_lr(x, 5.0) <= 0.1 and ctrl.next_lr(x, 1e-9) >= 1e-5  # clipped to [lr_min, lr_max]
    ctrl.reset()
    assert ctrl.history == []


def test_continuous_next_lr_uses_the_mean_as_a_log_factor(checkpoints):
    ctrl = LearnedController.from_checkpoint(checkpoints["continuous"])
    module = _rllib_module(checkpoints["continuous"])
    x = np.array([0.5, 0.6, 3.0, 1.0, 0.0, 0.01, 1e-3], dtype=np.float32)
    with torch.no_grad():
        inputs = module.forward_inference({"obs": torch.as_tensor(ctrl.normalise(x[None]))})["action_dist_inputs"]
        mean = float(inputs[0, 0])
    assert ctrl.next_lr(x, 1e-3) == pytest.approx(1e-3 * 1.2 ** float(np.clip(mean, -1, 1)), rel=1e-5)


def test_levels_next_lr_is_the_argmax_level_whatever_the_current_lr(checkpoints):
    ctrl = LearnedController.from_checkpoint(checkpoints["levels"])
    module = _rllib_module(checkpoints["levels"])
    x = np.array([0.5, 0.6, 3.0, 1.0, 0.0, 0.01, 1e-3], dtype=np.float32)
    with torch.no_grad():
        logits = module.forward_inference({"obs": torch.as_tensor(ctrl.normalise(x[None]))})["action_dist_inputs"][0]
    expected = LEVELS[int(torch.argmax(logits))]
    assert [ctrl.next_lr(x, lr) for lr in (1e-5, 1e-3, 0.05)] == [expected] * 3
    assert ctrl.action_probabilities(x[None]).shape == (1, len(LEVELS))


def test_drives_a_lenet5_child_on_another_task_to_completion(checkpoints):
    """Transfer: trained on digits-MLP, the controller runs a LeNet-5 child with the Tune trial's API."""
    ctrl = LearnedController.from_checkpoint(checkpoints["discrete"])
    task = TaskConfig(dataset="digits", model="lenet5", batch_size=32, steps=60, val_subset=128, device="cpu")
    trainer = ChildTrainer(task)
    trainer.reset(1e-3, seed=3)
    lrs = [trainer.lr]
    while trainer.step < task.steps:  # as in training: decide at steps 0, 10, ..., 50, then train the block
        feats, _ = trainer.observe()
        trainer.lr = ctrl.next_lr(feats, trainer.lr)
        lrs.append(trainer.lr)
        trainer.train_steps(ctrl.action_every)
    assert trainer.step == 60 and not trainer.diverged and len(ctrl.history) == 6
    ratios = np.array(lrs[1:]) / np.array(lrs[:-1])
    assert all(min(abs(r - f) for f in (FACTOR, 1 / FACTOR, 1.0)) < 1e-9 for r in ratios)
    assert np.isfinite(trainer.evaluate("test").loss)


def test_child_observer_reproduces_trainer_features(checkpoints):
    """The user-loop features equal ChildTrainer.observe() on the same model (independent code path)."""
    task = TaskConfig(**TASK)
    trainer = ChildTrainer(task)
    trainer.reset(3e-3, seed=0)
    x, y = trainer.split("val_subset")
    observer = ChildObserver(trainer.model, x, y, trainer.optimizer)
    for _ in range(3):
        trainer.train_steps(10, after_step=lambda step, loss: observer.record(loss))
        got = observer()
        assert trainer.model.training  # the observer restores the mode it found
        expected, _ = trainer.observe()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_controller_scheduler_is_a_torch_lr_scheduler(checkpoints):
    """docs/controller.md's example: any model, any optimizer, the controller as a torch LRScheduler."""
    ctrl = LearnedController.from_checkpoint(checkpoints["discrete"])
    data = load_dataset("digits")
    # -- the documented loop ---------------------------------------------------------------
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    observer = ChildObserver(model, data.val_x[:128], data.val_y[:128], optimizer)
    seen = []
    scheduler = ControllerScheduler(optimizer, ctrl, lambda: seen.append(observer()) or seen[-1], total_steps=50)
    for step in range(50):
        idx = torch.randint(0, len(data.train_x), (32,))
        loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        observer.record(loss.item())
        scheduler.step()
    # ---------------------------------------------------------------------------------------
    assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
    assert len(seen) == 5 and len(ctrl.history) == 5  # steps 0 (at construction), 10, 20, 30, 40: none at 50
    lr = 1e-2
    for feats, (before, after) in zip(seen, ctrl.history):
        assert before == lr and feats[6] == pytest.approx(lr, rel=1e-6)  # feature 7 is the LR in force
        lr = ctrl.next_lr(feats, lr)
        assert lr == after
    assert optimizer.param_groups[0]["lr"] == ctrl.history[4][1] == scheduler.get_last_lr()[0]
    state = scheduler.state_dict()
    assert state["last_epoch"] == 50 and "controller" not in state and "optimizer" not in state
    fresh = ControllerScheduler(torch.optim.SGD(model.parameters(), lr=1.0), ctrl, lambda: seen[-1], total_steps=50)
    fresh.load_state_dict(state)
    assert fresh.last_epoch == 50 and fresh.get_last_lr() == scheduler.get_last_lr()
