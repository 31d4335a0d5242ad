"""MNIST-1D: generated offline, cached once as .npz (atomically), split like digits, learnable by the MLP."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import numpy as np
import pytest

from lrservice.child import data as child_data
from lrservice.child.data import generate_mnist1d, load_dataset, mnist1d_arrays, mnist1d_cache_path
from lrservice.child.trainer import ChildTrainer
from lrservice.config import ConfigError, TaskConfig, config_from_dict, load_config

SMALL = 200  # samples for the generator tests: 20 per class, fast


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One data directory for the module: the full dataset is generated once (about 5 s)."""
    return tmp_path_factory.mktemp("mnist1d")


@pytest.fixture(scope="module")
def mnist1d(data_dir):
    return load_dataset("mnist1d", data_dir, val_size=5000)


def test_splits_shapes_dtypes_and_classes(mnist1d):
    assert mnist1d.name == "mnist1d" and mnist1d.num_classes == 10
    assert mnist1d.input_shape == (1, 40)
    assert (len(mnist1d.train_x), len(mnist1d.val_x), len(mnist1d.test_x)) == (3500, 500, 1000)
    for x, y in [(mnist1d.train_x, mnist1d.train_y), (mnist1d.val_x, mnist1d.val_y), (mnist1d.test_x, mnist1d.test_y)]:
        assert str(x.dtype) == "torch.float32" and str(y.dtype) == "torch.int64"
        assert sorted(y.unique().tolist()) == list(range(10))
    # validation is held out of training: no signal appears in both
    train = {tuple(row) for row in mnist1d.train_x.flatten(1).tolist()}
    assert not any(tuple(row) in train for row in mnist1d.val_x.flatten(1).tolist())


def test_split_is_fixed_by_split_seed(data_dir, mnist1d):
    again = load_dataset("mnist1d", data_dir, val_size=500)
    assert bool((again.val_x == mnist1d.val_x).all()) and bool((again.train_y == mnist1d.train_y).all())
    other = child_data.load_mnist1d(data_dir, val_size=500, split_seed=1)
    assert not bool((other.val_x == mnist1d.val_x).all())


def test_generation_is_deterministic_and_leaves_global_rng_alone():
    np.random.seed(7)
    random.seed(7)
    before_np, before_py = np.random.get_state()[1].copy(), random.getstate()
    first, second = generate_mnist1d(SMALL), generate_mnist1d(SMALL)
    for key in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(first[key], second[key])
    assert first["x"].dtype == np.float32 and first["y"].dtype == np.int64
    assert not np.array_equal(first["x"], generate_mnist1d(SMALL, seed=43)["x"])
    np.testing.assert_array_equal(np.random.get_state()[1], before_np)
    assert random.getstate() == before_py


def test_generation_needs_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("mnist1d generation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import requests

    monkeypatch.setattr(requests, "get", refuse)
    assert generate_mnist1d(SMALL)["x"].shape == (160, 40)


def counting_generator(monkeypatch) -> list:
    calls = []
    real = child_data.generate_mnist1d

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(child_data, "generate_mnist1d", counted)
    return calls


def test_cache_hit_does_not_regenerate(tmp_path, monkeypatch):
    calls = counting_generator(monkeypatch)
    first = mnist1d_arrays(tmp_path, num_samples=SMALL)
    assert len(calls) == 1 and mnist1d_cache_path(tmp_path, SMALL).is_file()
    second = mnist1d_arrays(tmp_path, num_samples=SMALL)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["x"], second["x"])
    np.testing.assert_array_equal(first["y_test"], second["y_test"])


def test_damaged_cache_is_generated_again(tmp_path, monkeypatch):
    path = mnist1d_cache_path(tmp_path, SMALL)
    path.write_bytes(b"not an npz file")
    calls = counting_generator(monkeypatch)
    arrays = mnist1d_arrays(tmp_path, num_samples=SMALL)
    assert len(calls) == 1 and arrays["x"].shape == (160, 40)
    with np.load(path) as cached:
        np.testing.assert_array_equal(cached["x"], arrays["x"])


def test_cache_file_is_written_atomically(tmp_path, monkeypatch):
    path = mnist1d_cache_path(tmp_path, SMALL)
    replaced = []
    real_replace = os.replace

    def checked_replace(src, dst):
        assert Path(dst) == path and not path.exists()          # nothing visible before the rename
        assert Path(src).parent == path.parent and Path(src) != path  # a sibling temp file
        with np.load(src) as complete:                           # already whole when renamed
            assert complete["x"].shape == (160, 40)
        replaced.append(src)
        real_replace(src, dst)

    monkeypatch.setattr(child_data.os, "replace", checked_replace)
    mnist1d_arrays(tmp_path, num_samples=SMALL)
    assert len(replaced) == 1 and path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def half_write(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(child_data.np, "savez", half_write)
    with pytest.raises(OSError, match="disk full"):
        mnist1d_arrays(tmp_path, num_samples=SMALL)
    assert list(tmp_path.iterdir()) == []


def test_mlp_learns_above_chance_in_a_few_hundred_steps(data_dir, mnist1d):
    task = TaskConfig(dataset="mnist1d", model="mlp", batch_size=64, data_dir=str(data_dir), val_size=500, device="cpu")
    trainer = ChildTrainer(task, data=mnist1d)
    trainer.reset(lr=3e-3, seed=0)
    before = trainer.evaluate("test").accuracy
    result = trainer.train_steps(300)
    after = trainer.evaluate("test").accuracy
    assert result.steps == 300 and not result.diverged
    assert after > 0.35 and after > before + 0.15  # chance is 0.10


@pytest.mark.parametrize("model", ["lenet5", "resnet18"])
def test_config_rejects_image_models_on_mnist1d(model):
    with pytest.raises(ConfigError, match=r"^task\.model: '%s' is not allowed with dataset 'mnist1d'" % model):
        config_from_dict({"task": {"dataset": "mnist1d", "model": model}})


def test_mnist1d_config_file_is_valid():
    config = load_config(Path(__file__).parent.parent / "configs" / "mnist1d-mlp.yaml")
    assert config.task.dataset == "mnist1d" and config.task.model == "mlp"
