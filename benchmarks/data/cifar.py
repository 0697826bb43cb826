"""CIFAR-10 read from the python pickle batches.

Layout (what ``torchvision.datasets.CIFAR10(root, download=True)`` leaves behind)::

    <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch

Each batch is a pickled dict with ``b'data'`` (uint8 N x 3072, channel-major 3x32x32 rows) and
``b'labels'`` (N ints in 0..9). Fewer training batches are accepted (subsets, test fixtures), at
least one. Split: 45k/5k train/val of the 50k training images (seeded); for smaller sets 10 % val.
Train items are augmented (random 32x32 crop of the 4-pixel zero-padded image, horizontal flip);
all items are normalised with the CIFAR-10 per-channel mean/std.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from benchmarks.data.common import (
    EpochDraws,
    check_limit,
    check_options,
    check_root,
    fingerprint,
    limit_indices,
    require,
    split_train_val,
)
from benchmarks.data.splits import DATASETS, DatasetError, DataSplits

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
FULL_TRAIN, FULL_VAL = 50_000, 5_000
HOW_TO_GET = (
    "get CIFAR-10 with --download, or torchvision.datasets.CIFAR10(root, download=True), or unpack "
    f"cifar-10-python.tar.gz into the data dir so that <data dir>/{FOLDER}/ exists"
)


class CifarImages(Dataset):
    """In-memory CIFAR images.

    images: uint8 (N, 3, 32, 32); labels: int64 (N,). Item: (float32 (3, 32, 32) normalised, int).
    augment: random crop of the 4-pixel zero-padded image + horizontal flip (train only).
    """

    def __init__(self, images: Tensor, labels: Tensor, *, augment: bool, seed: int) -> None:
        self.images, self.labels, self.augment = images, labels, augment
        self.draws = EpochDraws(seed)
        self.mean = torch.tensor(CIFAR_MEAN).view(3, 1, 1)
        self.std = torch.tensor(CIFAR_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """Tie augmentation to (seed, index, epoch); see :class:`EpochDraws`."""
        self.draws.set_epoch(epoch)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.augment:
            image = self._augment(image, self.draws.next(index))
        x = (image.to(torch.float32) / 255 - self.mean) / self.std
        return x, int(self.labels[index])

    @staticmethod
    def _augment(image: Tensor, seed: int) -> Tensor:
        """Random 32x32 crop (offsets 0..8) of the zero-padded image, flipped if the bit says so."""
        dx, dy, flip = seed % 9, (seed >> 8) % 9, (seed >> 16) & 1
        padded = torch.zeros(3, 40, 40, dtype=image.dtype)
        padded[:, 4:36, 4:36] = image
        crop = padded[:, dy : dy + 32, dx : dx + 32]
        return crop.flip(-1) if flip else crop


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays (a CIFAR batch needs nothing else)."""

    ALLOWED = {
        ("numpy", "ndarray"): "numpy",
        ("numpy", "dtype"): "numpy",
        ("numpy.core.multiarray", "_reconstruct"): "numpy._core.multiarray",  # numpy 1 pickles
        ("numpy._core.multiarray", "_reconstruct"): "numpy._core.multiarray",
        ("numpy.core.multiarray", "scalar"): "numpy._core.multiarray",
        ("numpy._core.multiarray", "scalar"): "numpy._core.multiarray",
        ("numpy.core.numeric", "_frombuffer"): "numpy._core.numeric",  # pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"): "numpy._core.numeric",
        ("_codecs", "encode"): "_codecs",  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(self.ALLOWED[module, name], name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch -> (uint8 (N, 3, 32, 32), int64 (N,)); any defect -> DatasetError."""
    try:
        with path.open("rb") as handle:
            batch = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
    except Exception as error:  # unpickling can fail in many ways on a damaged file
        raise DatasetError(
            f"cifar10: cannot read {path} ({type(error).__name__}: {error}); it is truncated or "
            f"not a CIFAR-10 python batch; {HOW_TO_GET}"
        ) from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    bad = _batch_defect(data, labels)
    if bad:
        raise DatasetError(f"cifar10: {path} is not a CIFAR-10 python batch ({bad}); {HOW_TO_GET}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _batch_defect(data: Any, labels: Any) -> str:
    """'' for a valid batch, else what is wrong with it."""
    if not isinstance(data, np.ndarray) or labels is None:
        return "expected a dict with b'data' (numpy array) and b'labels'"
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) == 0:
        return f"b'data' must be uint8 N x 3072, got {data.dtype} {data.shape}"
    labels = np.asarray(labels)
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        return f"b'labels' must be {len(data)} ints, got shape {labels.shape} dtype {labels.dtype}"
    if labels.min() < 0 or labels.max() > 9:
        return f"labels must lie in 0..9, got {labels.min()}..{labels.max()}"
    return ""


def _read_all(folder: Path) -> tuple[list[Path], Tensor, Tensor, Tensor, Tensor]:
    """(files used, train images, train labels, test images, test labels) from ``folder``."""
    train_files = [folder / name for name in TRAIN_BATCHES if (folder / name).is_file()]
    if not train_files:
        raise DatasetError(
            f"cifar10: no training batch in {folder} (expected data_batch_1 .. data_batch_5); " + HOW_TO_GET
        )
    test_file = require(folder / TEST_BATCH, "cifar10", "the test batch", HOW_TO_GET)
    train = [read_batch(path) for path in train_files]
    test_x, test_y = read_batch(test_file)
    train_x = torch.from_numpy(np.concatenate([x for x, _ in train]))
    train_y = torch.from_numpy(np.concatenate([y for _, y in train]))
    return train_files + [test_file], train_x, train_y, torch.from_numpy(test_x), torch.from_numpy(test_y)


@DATASETS.register("cifar10")
def load(
    root: Path | None, *, seed: int, download: bool = False, limit: int | None = None, **options: Any
) -> DataSplits:
    """CIFAR-10: 45k/5k/10k train/val/test of (3, 32, 32) normalised images, 10 classes."""
    check_options("cifar10", options, {})
    check_limit("cifar10", limit)
    if download and root is not None:
        import torchvision

        root = check_root("cifar10", root, HOW_TO_GET, create=True)
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    root = check_root("cifar10", root, HOW_TO_GET)
    folder = require(root / FOLDER, "cifar10", "the unpacked python batches", HOW_TO_GET, folder=True)
    files, train_x, train_y, test_x, test_y = _read_all(folder)
    n = len(train_y)
    n_val = FULL_VAL if n == FULL_TRAIN else (max(1, round(0.1 * n)) if n > 1 else 0)
    train_idx, val_idx = split_train_val(n, n_val, seed, 0)
    parts = {"train": (train_x, train_y, train_idx), "val": (train_x, train_y, val_idx)}
    parts["test"] = (test_x, test_y, torch.arange(len(test_y)))
    splits = {}
    for number, (name, (x, y, idx)) in enumerate(parts.items()):
        idx = idx[limit_indices(len(idx), limit, seed, 1 + number)]
        splits[name] = CifarImages(x[idx].clone(), y[idx].clone(), augment=name == "train", seed=seed)
    entries = [(path.name, path.stat().st_size) for path in files]
    return DataSplits(
        **splits,
        num_classes=10,
        input_shape=(3, 32, 32),
        fingerprint=fingerprint(entries, dataset="cifar10", seed=seed, limit=limit, n_val=n_val),
    )
