"""Child datasets held in memory as tensors: train / validation / test splits.

``digits`` (scikit-learn's 8x8 digits) ships inside scikit-learn and needs no network.
``mnist1d`` (MNIST-1D, Greydanus 2020: 1-D signals of length 40, harder than digits) is
generated offline by the ``mnist1d`` package and cached as a ``.npz`` in the data directory.
``mnist``, ``fashion_mnist`` and ``cifar10`` load through torchvision from a data
directory; they download only when the caller allows it. Whole splits live in memory
as float tensors so a training step is an index into a tensor, not a DataLoader.
"""

from __future__ import annotations

import os
import random
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from lrservice.child.names import DATASETS

MNIST1D_SAMPLES = 5000  # the package's default: 4,000 train + 1,000 test signals
MNIST1D_SEED = 42       # the package's default seed (the published MNIST-1D)
_MNIST1D_KEYS = ("x", "y", "x_test", "y_test")


class DatasetUnavailable(RuntimeError):
    """The dataset's files are not in the data directory and downloading is not allowed."""


@dataclass(frozen=True)
class ChildData:
    """A dataset as tensors. Images are ``(N, C, H, W)``, 1-D signals ``(N, C, L)``; float32, labels int64."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def split(self, name: str, val_subset: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and labels of ``train``, ``val``, ``test``, or ``val_subset`` (the first
        ``val_subset`` validation samples: the fixed set the controller's reward uses)."""
        if name == "val_subset":
            return self.val_x[:val_subset], self.val_y[:val_subset]
        pairs = {"train": (self.train_x, self.train_y), "val": (self.val_x, self.val_y),
                 "test": (self.test_x, self.test_y)}
        if name not in pairs:
            raise ValueError(f"split: {name!r} is not allowed; choose one of: train, val, val_subset, test")
        return pairs[name]

    def to(self, device: torch.device | str) -> "ChildData":
        """A copy with every tensor on ``device`` (one transfer, then steps never copy)."""
        moved = {k: getattr(self, k).to(device) for k in
                 ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return ChildData(name=self.name, num_classes=self.num_classes, **moved)


def _split(name: str, x: torch.Tensor, y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
           val_size: int, split_seed: int, max_train_samples: int | None, num_classes: int) -> ChildData:
    """Hold out ``val_size`` training samples (fixed by ``split_seed``) for validation."""
    n = x.shape[0]
    if val_size >= n:
        raise ValueError(f"task.val_size: {val_size} is not allowed; {name} has only {n} training samples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if max_train_samples is not None:
        train_idx = train_idx[:max_train_samples]
    return ChildData(name, x[train_idx].contiguous(), y[train_idx].contiguous(),
                     x[val_idx].contiguous(), y[val_idx].contiguous(),
                     test_x.contiguous(), test_y.contiguous(), num_classes)


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Per-channel standardisation with statistics from the training images only."""
    dims = (0, 2, 3)
    mean = train.mean(dim=dims, keepdim=True)
    std = train.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def load_digits(val_size: int = 300, split_seed: int = 0, max_train_samples: int | None = None,
                test_fraction: float = 0.2) -> ChildData:
    """scikit-learn's 1,797 8x8 digits as ``(N, 1, 8, 8)``; the test split is a fixed 20%."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(12345))
    n_test = int(round(len(y) * test_fraction))
    test_idx, rest_idx = order[:n_test], order[n_test:]
    x_rest, x_test = _standardise(x[rest_idx], x[test_idx])
    return _split("digits", x_rest, y[rest_idx], x_test, y[test_idx],
                  val_size, split_seed, max_train_samples, num_classes=10)


def generate_mnist1d(num_samples: int = MNIST1D_SAMPLES, seed: int = MNIST1D_SEED) -> dict[str, np.ndarray]:
    """MNIST-1D from the package's templates and default args via ``make_dataset`` (never
    ``get_dataset``, which downloads a pickle); the global RNG state is left as it was."""
    from mnist1d.data import get_dataset_args, make_dataset  # imports matplotlib and requests: 2.6 s, so only here

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    saved = random.getstate(), np.random.get_state()  # make_dataset seeds the global RNGs
    try:
        data = make_dataset(args)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    return {"x": data["x"].astype(np.float32), "y": data["y"].astype(np.int64),
            "x_test": data["x_test"].astype(np.float32), "y_test": data["y_test"].astype(np.int64)}


def mnist1d_cache_path(root: str | Path, num_samples: int = MNIST1D_SAMPLES, seed: int = MNIST1D_SEED) -> Path:
    """The cache file; named by package version, size and seed so a change of any regenerates."""
    try:
        version = metadata.version("mnist1d")
    except metadata.PackageNotFoundError:
        raise DatasetUnavailable("mnist1d: the 'mnist1d' package is not installed; run: pip install mnist1d") from None
    return Path(root) / f"mnist1d-{version}-n{num_samples}-seed{seed}.npz"


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a sibling temp file, then ``os.replace``: readers see no file or a whole one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; the data directory may be shared
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mnist1d_arrays(root: str | Path, num_samples: int = MNIST1D_SAMPLES, seed: int = MNIST1D_SEED) -> dict[str, np.ndarray]:
    """The cached arrays; generated and cached when the file is missing or unreadable."""
    path = mnist1d_cache_path(root, num_samples, seed)
    try:
        with np.load(path) as cached:
            return {k: cached[k] for k in _MNIST1D_KEYS}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        pass  # missing or damaged: generate again
    arrays = generate_mnist1d(num_samples, seed)
    _save_npz_atomic(path, arrays)
    return arrays


def load_mnist1d(root: str | Path, val_size: int = 500, split_seed: int = 0,
                 max_train_samples: int | None = None) -> ChildData:
    """MNIST-1D as ``(N, 1, 40)`` signals, 10 classes; already centred and scaled by the generator."""
    arrays = mnist1d_arrays(root)
    signals = lambda key: torch.from_numpy(arrays[key]).unsqueeze(1)
    return _split("mnist1d", signals("x"), torch.from_numpy(arrays["y"]), signals("x_test"),
                  torch.from_numpy(arrays["y_test"]), val_size, split_seed, max_train_samples, num_classes=10)


_MISSING = (
    "{title} was not found in {root}. Rerun with --download (needs network) to fetch it there, "
    "or copy the torchvision {title} files into {root} (set task.data_dir or $LRSERVICE_DATA to another folder)."
)


def _torchvision(name: str, root: Path, download: bool, verify: bool):
    """Open the torchvision dataset objects (train, test), turning 'not found' into one sentence."""
    from torchvision import datasets

    titles = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
    classes = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST,
               "cifar10": _cifar10_class(verify)}
    cls = classes[name]
    root.mkdir(parents=True, exist_ok=True)
    try:
        return cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)
    except RuntimeError as exc:
        if "not found" in str(exc).lower() or "corrupted" in str(exc).lower():
            raise DatasetUnavailable(_MISSING.format(title=titles[name], root=root)) from None
        raise
    except OSError as exc:  # download attempted without network
        raise DatasetUnavailable(
            f"{titles[name]} could not be downloaded into {root} ({exc.__class__.__name__}: {exc}); "
            f"copy the torchvision {titles[name]} files there and rerun without --download."
        ) from None


def _cifar10_class(verify: bool):
    """torchvision's CIFAR10, optionally without the md5 check (for hand-made small files)."""
    from torchvision import datasets

    if verify:
        return datasets.CIFAR10

    base = datasets.CIFAR10

    class CIFAR10Unverified(base):
        """Same loader; files must exist but their md5 is not checked (torchvision skips md5=None)."""

        train_list = [(name, None) for name, _ in base.train_list]
        test_list = [(name, None) for name, _ in base.test_list]
        meta = {**base.meta, "md5": None}

    return CIFAR10Unverified


def load_torchvision(name: str, root: str | Path, download: bool = False, val_size: int = 5000,
                     split_seed: int = 0, max_train_samples: int | None = None,
                     verify: bool = True) -> ChildData:
    """MNIST, Fashion-MNIST or CIFAR-10 from ``root`` via torchvision, as standardised tensors."""
    train, test = _torchvision(name, Path(root), download, verify)
    if name == "cifar10":
        to_x = lambda d: torch.tensor(np.asarray(d.data), dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    else:
        to_x = lambda d: d.data.to(torch.float32).unsqueeze(1) / 255.0
    to_y = lambda d: torch.as_tensor(np.asarray(d.targets), dtype=torch.int64)
    x_train, x_test = _standardise(to_x(train), to_x(test))
    return _split(name, x_train, to_y(train), x_test, to_y(test),
                  val_size, split_seed, max_train_samples, num_classes=10)


def load_dataset(name: str, root: str | Path = ".", download: bool = False, val_size: int = 5000,
                 split_seed: int = 0, max_train_samples: int | None = None, verify: bool = True) -> ChildData:
    """Load any supported dataset by name; ``val_size`` is capped at 300 for ``digits`` and
    500 for ``mnist1d`` (small datasets: the rest trains)."""
    if name not in DATASETS:
        raise ValueError(f"task.dataset: {name!r} is not allowed; choose one of: {', '.join(DATASETS)}")
    if name == "digits":
        return load_digits(val_size=min(val_size, 300), split_seed=split_seed,
                           max_train_samples=max_train_samples)
    if name == "mnist1d":
        return load_mnist1d(root, val_size=min(val_size, 500), split_seed=split_seed,
                            max_train_samples=max_train_samples)
    return load_torchvision(name, root, download=download, val_size=val_size, split_seed=split_seed,
                            max_train_samples=max_train_samples, verify=verify)
