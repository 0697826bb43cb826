"""Helpers shared by the data-set loaders: option/root checks, fingerprints, seeded splits."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.data.splits import DatasetError


def check_options(dataset: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict:
    """``defaults`` updated with ``options``; an unknown option raises a DatasetError naming it."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        allowed = ", ".join(sorted(defaults)) or "(none)"
        raise DatasetError(f"{dataset}: unknown option(s) {', '.join(unknown)}; allowed: {allowed}")
    return {**defaults, **options}


def check_root(dataset: str, root: Path | None, how_to_get: str, *, create: bool = False) -> Path:
    """``root`` as a Path; None, a missing folder or a non-folder (e.g. a regular file) raises a
    DatasetError. ``create``: make the folder (and its parents) first, as before a download."""
    if root is None:
        raise DatasetError(f"{dataset}: no data folder given (pass --data-dir); {how_to_get}")
    root = Path(root)
    refuse_non_folder(dataset, root, how_to_get)
    if create:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DatasetError(f"{dataset}: cannot create data folder {root} ({error}); {how_to_get}") from None
    if not root.is_dir():
        raise DatasetError(f"{dataset}: data folder {root} does not exist; {how_to_get}")
    return root


def refuse_non_folder(dataset: str, root: Path, how_to_get: str) -> None:
    """A DatasetError when ``root`` exists but is not a folder (a regular file, a device, ...)."""
    if root.exists() and not root.is_dir():
        kind = "a file" if root.is_file() else "not a regular folder"
        raise DatasetError(
            f"{dataset}: data root {root} is {kind}; the data root must be a folder: pass the folder that "
            f"holds the data set as --data-dir; {how_to_get}"
        )


def check_limit(dataset: str, limit: int | None) -> None:
    """``limit`` must be None or a positive int."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"{dataset}: limit must be a positive integer or None, got {limit!r}")


def require(path: Path, dataset: str, what: str, how_to_get: str, *, folder: bool = False) -> Path:
    """``path`` if it exists (as a folder when ``folder``), else a DatasetError naming it."""
    if not (path.is_dir() if folder else path.is_file()):
        kind = "folder" if folder else "file"
        raise DatasetError(f"{dataset}: missing {kind} {path} ({what}); {how_to_get}")
    return path


def one_line(text: str, limit: int = 300) -> str:
    """``text`` for a one-line message: terminal escapes dropped, whitespace runs (newlines included)
    collapsed to one space, a trailing period dropped, cut at ``limit`` chars."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(text)).split()).rstrip(".")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fingerprint(entries: Iterable[tuple[str, int]], **extra: Any) -> str:
    """16 hex chars of sha256 over (name, size) entries plus ``extra`` (split/options, JSON)."""
    digest = hashlib.sha256()
    for name, size in sorted(entries):
        digest.update(f"{name}\0{size}\n".encode())
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def mix(*values: int) -> int:
    """Deterministic 64-bit hash of ints (splitmix64 chain): per-item augmentation seeds."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 29
    return state


def generator(*values: int) -> torch.Generator:
    """A torch Generator seeded with ``mix(*values)`` (e.g. seed, split number)."""
    return torch.Generator().manual_seed(mix(*values) & 0x7FFFFFFFFFFFFFFF)


def limit_indices(n: int, limit: int | None, *seed: int) -> Tensor:
    """Sorted int64 indices of a seeded random subset of ``range(n)`` of size ``min(n, limit)``."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=generator(*seed))[:limit].sort().values


def split_train_val(n: int, n_val: int, *seed: int) -> tuple[Tensor, Tensor]:
    """Seeded disjoint (train, val) sorted index tensors covering ``range(n)``."""
    perm = torch.randperm(n, generator=generator(*seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


class EpochDraws:
    """Per-item augmentation seeds (64-bit ints).

    Default: drawn from torch's global RNG, like torchvision transforms (reproducible under
    ``torch.manual_seed``; DataLoader workers get distinct per-epoch seeds). After
    ``set_epoch(e)``: ``mix(seed, index, e)``, independent of worker count and sample order.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Make the augmentation of every item a function of (seed, index, epoch) only."""
        self.epoch = epoch

    def next(self, index: int) -> int:
        """The seed of this draw of item ``index``."""
        if self.epoch is None:
            return int(torch.randint(0, 2**62, (1,)))
        return mix(self.seed, index, self.epoch)


# ------------------------------------------------------------------------------ caches ----


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, then os.replace: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
