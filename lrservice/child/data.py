"""Child datasets held in memory as tensors: train / validation / test splits.

``digits`` (scikit-learn's 8x8 digits) ships inside scikit-learn and needs no network.
``mnist1d`` (MNIST-1D, Greydanus 2020: 1-D signals of length 40, harder than digits) is
generated offline by the ``mnist1d`` package and cached as a ``.npz`` in the data directory.
``mnist``, ``fashion_mnist`` and ``cifar10`` load through torchvision from a data
directory; they download only when the caller allows it. Whole splits live in memory
as float tensors so a training step is an index into a tensor, not a DataLoader.

Every dataset, built-in or a user's plugin, comes through one door: a loader
``loader(root, **dataset_args)`` returns a mapping of splits (:func:`child_data` checks it and
holds out the validation split); the built-in loaders below are registered by name in
:data:`lrservice.child.names.DATASETS`.
"""

from __future__ import annotations

import inspect
import math
import os
import random
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from lrservice.child.names import DATASETS
from lrservice.child.plugins import resolve
from lrservice.errors import ConfigError
from lrservice.files import write_atomic

MNIST1D_SAMPLES = 5000  # the package's default: 4,000 train + 1,000 test signals
MNIST1D_SEED = 42       # the package's default seed (the published MNIST-1D)
_MNIST1D_KEYS = ("x", "y", "x_test", "y_test")
IN_MEMORY_LIMIT = 4 * 2**30
"""Bytes a ``torch.utils.data.Dataset`` split may take once materialised as tensors (estimated from
its first item); above it the load is refused with a hint (``max_train_samples``, a smaller split)."""


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
    return child_data(name, {"train": (x, y), "test": (test_x, test_y), "num_classes": num_classes},
                      val_size, split_seed, max_train_samples)


def child_data(name: str, splits: Any, val_size: int, split_seed: int = 0, max_train_samples: int | None = None,
               classification: bool = True, field: str = "task.dataset") -> ChildData:
    """The one check of a loader's result, and the split every dataset gets.

    ``splits`` maps ``train`` and ``test`` (and optionally ``val``) to ``(x, y)`` pairs of tensors or
    arrays, or to ``torch.utils.data.Dataset`` objects of ``(x, y)`` items; optional keys:
    ``num_classes`` (default: the largest label + 1) and ``val_size`` (a cap on ``task.val_size``).
    Without ``val``, ``val_size`` training samples, chosen by ``split_seed``, are held out; with
    ``max_train_samples`` only that many of the rest train. Only the samples kept are
    materialised. Every violation is one :class:`ConfigError` naming ``field``.
    """
    if not isinstance(splits, Mapping):
        raise ConfigError(f"{field}: {name!r} returned a {type(splits).__name__}, not a mapping; return "
                          "{'train': (x, y), 'test': (x, y)} (optionally 'val', 'num_classes')")
    for key in ("train", "test"):
        if key not in splits:
            raise ConfigError(f"{field}: {name!r} returned no {key!r} split (keys: {', '.join(map(str, splits))}); "
                              "return a mapping with 'train' and 'test' (and optionally 'val')")
    unknown = sorted(set(map(str, splits)) - {"train", "val", "test", "num_classes", "val_size"})
    if unknown:
        raise ConfigError(f"{field}: {name!r} returned unknown key {unknown[0]!r}; "
                          "allowed: train, val, test, num_classes, val_size")
    n = _length(field, "train", splits["train"])
    if "val" in splits:
        train_idx, val = torch.arange(n), _take(field, "val", splits["val"], None)
    else:
        size = min(val_size, int(splits.get("val_size", val_size)))
        if size >= n:
            raise ConfigError(f"{field}: {name!r} has only {n} training samples, too few to hold out "
                              f"task.val_size={size} for validation; lower task.val_size or return a 'val' split")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
        val_idx, train_idx = order[:size], order[size:]
        val = _take(field, "train", splits["train"], val_idx)
    if max_train_samples is not None:
        train_idx = train_idx[:max_train_samples]
    train = _take(field, "train", splits["train"], train_idx)
    test = _take(field, "test", splits["test"], None)
    parts = {"train": train, "val": val, "test": test}
    shapes = {k: tuple(x.shape[1:]) for k, (x, _) in parts.items()}
    if len(set(shapes.values())) > 1:
        raise ConfigError(f"{field}: {name!r} splits have different input shapes: "
                          + ", ".join(f"{k} {v}" for k, v in shapes.items()))
    num_classes = splits.get("num_classes")
    if classification:
        parts = {k: (x, _labels(field, k, y)) for k, (x, y) in parts.items()}
        top = max(int(y.max()) if y.numel() else -1 for _, y in parts.values()) + 1
        num_classes = top if num_classes is None else num_classes
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"{field}: {name!r} num_classes {num_classes!r} is not allowed; it must be an "
                              f"integer >= 2")
        for k, (_, y) in parts.items():
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
                raise ConfigError(f"{field}: {name!r} split {k!r} has labels in [{int(y.min())}, {int(y.max())}], "
                                  f"outside [0, {num_classes - 1}] (num_classes {num_classes})")
    elif num_classes is None:
        num_classes = math.prod(parts["train"][1].shape[1:])  # the width a regression head needs
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = parts["train"], parts["val"], parts["test"]
    return ChildData(name, train_x, train_y, val_x, val_y, test_x, test_y, int(num_classes))


def _length(field: str, key: str, split: Any) -> int:
    if isinstance(split, torch.utils.data.Dataset):
        return len(split)
    x, y = _pair(field, key, split)
    if len(x) != len(y):
        raise ConfigError(f"{field}: split {key!r} has {len(x)} inputs but {len(y)} targets; they must match")
    return len(x)


def _pair(field: str, key: str, split: Any) -> tuple[Any, Any]:
    if isinstance(split, (tuple, list)) and len(split) == 2:
        return split
    raise ConfigError(f"{field}: split {key!r} is a {type(split).__name__}; give an (x, y) pair of tensors or "
                      "arrays, or a torch.utils.data.Dataset of (x, y) items")


def _take(field: str, key: str, split: Any, idx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (float32) and targets of ``split`` at ``idx`` (all when None), as contiguous tensors."""
    if isinstance(split, torch.utils.data.Dataset):
        n = len(split)
        rows = range(n) if idx is None else idx.tolist()
        if not rows:
            raise ConfigError(f"{field}: split {key!r} is empty")
        first = _pair(field, key, split[rows[0]])
        estimate = torch.as_tensor(np.asarray(first[0])).numel() * 4 * len(rows)
        if estimate > IN_MEMORY_LIMIT:
            raise ConfigError(f"{field}: split {key!r} would take ~{estimate / 2**30:.1f} GiB in memory (limit "
                              f"{IN_MEMORY_LIMIT / 2**30:.0f} GiB); set task.max_train_samples or load a smaller split")
        items = [first] + [_pair(field, key, split[i]) for i in rows[1:]]
        x = torch.stack([torch.as_tensor(np.asarray(a)) for a, _ in items])
        y = torch.stack([torch.as_tensor(np.asarray(b)) for _, b in items])
    else:
        _length(field, key, split)
        x, y = (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)) for v in split)
        if idx is not None:
            x, y = x[idx], y[idx]
    if x.ndim < 2 or len(x) == 0:
        raise ConfigError(f"{field}: split {key!r} inputs have shape {tuple(x.shape)}; "
                          "expected (samples, features...) with at least one sample")
    if x.is_complex() or y.is_complex():
        raise ConfigError(f"{field}: split {key!r} holds complex numbers; expected real inputs and targets")
    y = y.to(torch.float32) if y.is_floating_point() else y.to(torch.int64)
    return x.to(torch.float32).contiguous(), y.contiguous()


def _labels(field: str, key: str, y: torch.Tensor) -> torch.Tensor:
    """Class indices as int64 ``(N,)``: integers, or floats with integral values."""
    if y.ndim != 1:
        raise ConfigError(f"{field}: split {key!r} labels have shape {tuple(y.shape)}; a classification task needs "
                          "one class index per sample (N,); for other targets name your own task.loss")
    if y.is_floating_point():
        if not bool(torch.isfinite(y).all()) or bool((y != y.round()).any()):
            raise ConfigError(f"{field}: split {key!r} labels are not integers (e.g. {float(y[y != y.round()][0])}); "
                              "a classification task needs class indices; for other targets name your own task.loss")
    return y.to(torch.int64)


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Per-channel standardisation with statistics from the training images only."""
    dims = (0, 2, 3)
    mean = train.mean(dim=dims, keepdim=True)
    std = train.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def _test_split(n: int, test_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed test split of ``n`` generated samples (the same on every machine): ``(test_idx, rest_idx)``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(12345))
    n_test = int(round(n * test_fraction))
    return order[:n_test], order[n_test:]


def digits(root: str | Path | None = None, test_fraction: float = 0.2) -> dict:
    """scikit-learn's 1,797 8x8 digits as ``(N, 1, 8, 8)``; the test split is a fixed 20%, and 300 training
    samples at most are held out for validation."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    test_idx, rest_idx = _test_split(len(y), test_fraction)
    x_rest, x_test = _standardise(x[rest_idx], x[test_idx])
    return {"train": (x_rest, y[rest_idx]), "test": (x_test, y[test_idx]), "num_classes": 10, "val_size": 300}


def load_digits(val_size: int = 300, split_seed: int = 0, max_train_samples: int | None = None,
                test_fraction: float = 0.2) -> ChildData:
    """:func:`digits` split: ``val_size`` (at most 300) held out of the training samples."""
    return child_data("digits", digits(test_fraction=test_fraction), val_size, split_seed, max_train_samples)


def tabular(root: str | Path | None = None, num_samples: int = 6000, num_features: int = 20, informative: int = 8,
            num_classes: int = 5, class_sep: float = 1.0, flip_y: float = 0.02, seed: int = 7,
            test_fraction: float = 0.2) -> dict:
    """A tabular classification task generated offline by scikit-learn's ``make_classification``
    (Guyon's Madelon design: ``informative`` Gaussian-cluster features, 4 redundant linear
    combinations, the rest noise; ``flip_y`` of the labels flipped) as ``(N, num_features)``
    float32, standardised with the training split's statistics. Fixed by ``seed``: every
    machine gets the same samples."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=num_samples, n_features=num_features, n_informative=informative,
                               n_redundant=min(4, num_features - informative), n_classes=num_classes,
                               n_clusters_per_class=2, class_sep=class_sep, flip_y=flip_y, random_state=seed)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)
    test_idx, rest_idx = _test_split(len(y), test_fraction)
    mean, std = x[rest_idx].mean(dim=0), x[rest_idx].std(dim=0).clamp_min(1e-6)
    return {"train": ((x[rest_idx] - mean) / std, y[rest_idx]), "test": ((x[test_idx] - mean) / std, y[test_idx]),
            "num_classes": num_classes, "val_size": 1000}


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
    """Through :func:`lrservice.files.write_atomic`: readers see no file or a whole one."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())

    write_atomic(path, write)


def mnist1d_arrays(root: str | Path, num_samples: int = MNIST1D_SAMPLES,
                   seed: int = MNIST1D_SEED) -> dict[str, np.ndarray]:
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


def mnist1d(root: str | Path) -> dict:
    """MNIST-1D as ``(N, 1, 40)`` signals, 10 classes; already centred and scaled by the generator."""
    arrays = mnist1d_arrays(root)
    signals = lambda key: torch.from_numpy(arrays[key]).unsqueeze(1)
    return {"train": (signals("x"), torch.from_numpy(arrays["y"])),
            "test": (signals("x_test"), torch.from_numpy(arrays["y_test"])), "num_classes": 10, "val_size": 500}


def load_mnist1d(root: str | Path, val_size: int = 500, split_seed: int = 0,
                 max_train_samples: int | None = None) -> ChildData:
    """:func:`mnist1d` split: ``val_size`` (at most 500) held out of the 4,000 training signals."""
    return child_data("mnist1d", mnist1d(root), val_size, split_seed, max_train_samples)


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


def torchvision_splits(name: str, root: str | Path, download: bool = False, verify: bool = True) -> dict:
    """MNIST, Fashion-MNIST or CIFAR-10 from ``root`` via torchvision, as standardised tensors."""
    train, test = _torchvision(name, Path(root), download, verify)
    if name == "cifar10":
        to_x = lambda d: torch.tensor(np.asarray(d.data), dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    else:
        to_x = lambda d: d.data.to(torch.float32).unsqueeze(1) / 255.0
    to_y = lambda d: torch.as_tensor(np.asarray(d.targets), dtype=torch.int64)
    x_train, x_test = _standardise(to_x(train), to_x(test))
    return {"train": (x_train, to_y(train)), "test": (x_test, to_y(test)), "num_classes": 10}


def mnist(root: str | Path, download: bool = False) -> dict:
    """MNIST (60,000 train / 10,000 test 28x28 digits) through torchvision."""
    return torchvision_splits("mnist", root, download)


def fashion_mnist(root: str | Path, download: bool = False) -> dict:
    """Fashion-MNIST (60,000 / 10,000 28x28 clothing images) through torchvision."""
    return torchvision_splits("fashion_mnist", root, download)


def cifar10(root: str | Path, download: bool = False, verify: bool = True) -> dict:
    """CIFAR-10 (50,000 / 10,000 32x32 colour images) through torchvision; ``verify`` checks md5 sums."""
    return torchvision_splits("cifar10", root, download, verify)


def load_torchvision(name: str, root: str | Path, download: bool = False, val_size: int = 5000,
                     split_seed: int = 0, max_train_samples: int | None = None,
                     verify: bool = True) -> ChildData:
    """MNIST, Fashion-MNIST or CIFAR-10 from ``root`` via torchvision, split."""
    return child_data(name, torchvision_splits(name, root, download, verify), val_size, split_seed, max_train_samples)


def call_loader(loader, root: str | Path, args: Mapping[str, Any], download: bool, field: str, name: str):
    """``loader(root, **args)``, plus ``download`` when the loader takes it; a raise becomes one line."""
    kwargs = dict(args)
    try:
        accepts = "download" in inspect.signature(loader).parameters
    except (TypeError, ValueError):
        accepts = False
    if accepts and "download" not in kwargs:
        kwargs["download"] = download
    try:
        return loader(str(root), **kwargs)
    except (DatasetUnavailable, ConfigError):
        raise
    except Exception as exc:
        raise ConfigError(f"{field}: loader {name!r} raised {type(exc).__name__}: {exc}") from None


def load_dataset(name: str, root: str | Path = ".", download: bool = False, val_size: int = 5000,
                 split_seed: int = 0, max_train_samples: int | None = None, verify: bool = True,
                 args: Mapping[str, Any] | None = None, plugin_dirs: Sequence[str] = (),
                 classification: bool = True) -> ChildData:
    """Any dataset by name — built-in (``val_size`` capped at 300 for ``digits``, 500 for ``mnist1d``) or a
    plugin ``"package.module:loader"`` called with ``args`` — through :func:`child_data`."""
    loader = resolve("task.dataset", name, DATASETS, plugin_dirs)
    args = dict(args or {})
    if name == "cifar10" and not verify:
        args["verify"] = False
    splits = call_loader(loader, root, args, download, "task.dataset", name)
    return child_data(name, splits, val_size, split_seed, max_train_samples, classification)
