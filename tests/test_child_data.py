"""Dataset loaders: digits offline, and torchvision loaders on tiny files in the real formats."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from lrservice.child.data import DatasetUnavailable, load_dataset, load_digits, load_torchvision


def write_idx(path, array: np.ndarray) -> None:
    """Write an IDX file (the MNIST format): magic 0x0000 08 <ndim>, big-endian dims, ubyte data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist_like(root, folder: str, n_train: int = 60, n_test: int = 20) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }
    for name, arr in arrays.items():
        write_idx(root / folder / "raw" / name, arr)
    return arrays


def make_cifar_like(root, n_per_batch: int = 8) -> dict:
    """Five training batches, a test batch and batches.meta, pickled as the CIFAR-10 python version."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3 * 32 * 32)).astype(np.uint8)
        labels = list(rng.integers(0, 10, n_per_batch))
        batches[name] = (data, labels)
        with open(base / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return batches


def test_digits_splits_are_disjoint_and_standardised():
    d = load_digits(val_size=300)
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert len(d.train_x) + len(d.val_x) + len(d.test_x) == 1797
    assert len(d.val_x) == 300 and len(d.test_x) == 359
    # standardised with training statistics: per-pixel-channel mean ~0 over train
    assert abs(float(d.train_x.mean())) < 0.05
    # no sample appears in two splits
    rows = lambda t: {tuple(r.tolist()) for r in t.flatten(1)}
    assert not rows(d.val_x) & rows(d.test_x)


def test_tabular_is_make_classification_split_and_standardised_on_train():
    from sklearn.datasets import make_classification

    from lrservice.child.data import child_data, tabular

    splits = tabular()
    d = child_data("tabular", splits, splits["val_size"])
    assert d.input_shape == (20,) and d.num_classes == 5
    assert (len(d.train_x), len(d.val_x), len(d.test_x)) == (3800, 1000, 1200)
    x, y = make_classification(n_samples=6000, n_features=20, n_informative=8, n_redundant=4, n_classes=5,
                               n_clusters_per_class=2, class_sep=1.0, flip_y=0.02, random_state=7)
    # The same values as scikit-learn's, up to the affine standardisation the training split defines.
    train_x, train_y = splits["train"]
    raw = torch.tensor(x, dtype=torch.float64)
    both = torch.cat([train_x, splits["test"][0]]).double()
    for j in range(20):
        a, b = both[:, j].sort().values, raw[:, j].sort().values
        slope = b.std() / a.std()
        assert torch.allclose(a * slope + (b.mean() - slope * a.mean()), b, atol=1e-4), j
    assert sorted(torch.bincount(torch.cat([train_y, splits["test"][1]])).tolist()) == sorted(
        torch.bincount(torch.tensor(y)).tolist())
    assert torch.allclose(train_x.mean(dim=0), torch.zeros(20), atol=1e-5)
    assert torch.allclose(train_x.std(dim=0), torch.ones(20), atol=1e-4)
    assert torch.equal(tabular()["test"][0], splits["test"][0])  # fixed seed: the same samples every time


def test_digits_same_seed_same_split():
    a, b = load_digits(split_seed=3), load_digits(split_seed=3)
    assert torch.equal(a.val_y, b.val_y) and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.val_y, load_digits(split_seed=4).val_y)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_idx_loaders_read_real_format(tmp_path, name, folder):
    arrays = make_mnist_like(tmp_path, folder)
    d = load_dataset(name, tmp_path, val_size=10)
    assert d.input_shape == (1, 28, 28)
    assert len(d.train_x) == 50 and len(d.val_x) == 10 and len(d.test_x) == 20
    # test split keeps file order: labels and pixels match the file, after standardisation
    assert d.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    raw_train = torch.tensor(arrays["train-images-idx3-ubyte"], dtype=torch.float32) / 255.0
    mean, std = raw_train.mean(), raw_train.std()
    expected = (torch.tensor(arrays["t10k-images-idx3-ubyte"], dtype=torch.float32) / 255.0 - mean) / std
    assert torch.allclose(d.test_x[:, 0], expected, atol=1e-5)
    # train + val together are exactly the training file's labels
    assert sorted(d.train_y.tolist() + d.val_y.tolist()) == sorted(arrays["train-labels-idx1-ubyte"].tolist())


def test_cifar_loader_reads_real_pickle_format(tmp_path):
    batches = make_cifar_like(tmp_path)
    d = load_torchvision("cifar10", tmp_path, val_size=8, verify=False)
    assert d.input_shape == (3, 32, 32)
    assert len(d.train_x) == 32 and len(d.val_x) == 8 and len(d.test_x) == 8
    test_data, test_labels = batches["test_batch"]
    assert d.test_y.tolist() == [int(v) for v in test_labels]
    # channel 0 of sample 0 is the first 1024 bytes of its row (CIFAR stores R, G, B planes)
    train_all = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)]).astype(np.float32) / 255.0
    red = train_all[:, :1024]
    expected = (test_data[0, :1024].astype(np.float32) / 255.0 - red.mean()) / red.std(ddof=1)
    assert np.allclose(d.test_x[0, 0].numpy().ravel(), expected, atol=1e-4)


def test_cifar_checksums_are_verified_by_default(tmp_path):
    make_cifar_like(tmp_path)
    with pytest.raises(DatasetUnavailable, match="CIFAR-10 was not found"):
        load_torchvision("cifar10", tmp_path, val_size=8)


@pytest.mark.parametrize("name,title",
                         [("mnist", "MNIST"), ("fashion_mnist", "Fashion-MNIST"), ("cifar10", "CIFAR-10")])
def test_missing_data_offline_gives_one_clear_sentence(tmp_path, name, title):
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset(name, tmp_path / "empty", download=False)
    message = str(info.value)
    assert message.startswith(f"{title} was not found in {tmp_path / 'empty'}")
    assert "--download" in message and "\n" not in message


def test_unknown_dataset_names_allowed_values(tmp_path):
    with pytest.raises(ValueError, match="digits, mnist, fashion_mnist, cifar10"):
        load_dataset("imagenet", tmp_path)


def test_gzip_is_not_needed_but_real_idx_magic_is(tmp_path):
    """A corrupt IDX header is an error from torchvision, not silently wrong data."""
    make_mnist_like(tmp_path, "MNIST")
    bad = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    bad.write_bytes(gzip.compress(b"not an idx file"))
    with pytest.raises(Exception):
        load_dataset("mnist", tmp_path, val_size=10)


def test_one_dataset_cache_shared_by_env_compare_and_recommend(tmp_path):
    """The three per-process users get the very same tensors; only data-deciding fields make a new entry."""
    import dataclasses

    from lrservice.child.trainer import cached_task_data
    from lrservice.compare import trainable
    from lrservice.config import ControllerConfig, TaskConfig
    from lrservice.control.env import LRControlEnv, env_config
    from lrservice.recommend import trial

    task = TaskConfig(dataset="digits", data_dir=str(tmp_path), val_size=300, device="cpu")
    data = cached_task_data(task)
    assert cached_task_data(task) is data  # a compare or recommend trial in this process gets these tensors
    assert trainable.cached_task_data is cached_task_data and trial.cached_task_data is cached_task_data
    env = LRControlEnv(env_config(task, ControllerConfig()))
    assert env.trainer.data.train_x is data.train_x  # on CPU .to() keeps the shared tensors
    assert cached_task_data(dataclasses.replace(task, seed=5, steps=7, batch_size=8)) is data
    other = cached_task_data(dataclasses.replace(task, max_train_samples=100))
    assert other is not data and len(other.train_x) == 100
