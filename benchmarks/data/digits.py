"""The embedded default data set: scikit-learn's handwritten digits (1,797 real 8x8 scans, 10 classes).

Ships inside scikit-learn, so a fresh clone runs the default suite with no download. A fixed split
(seed ``split_seed``, independent of the run seed, so every seed shares one test set): 60 % train,
20 % validation, 20 % test, stratified by class. Pixels (0..16) are scaled to [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from benchmarks.data.common import check_limit, check_options, fingerprint, refuse_non_folder
from benchmarks.data.splits import DATASETS, DataSplits

DEFAULTS = {"split_seed": 0, "val_share": 0.2, "test_share": 0.2}


def _stratified_split(y: torch.Tensor, val_share: float, test_share: float, seed: int):
    """Per-class seeded shuffle, cut into (train, val, test) index tensors."""
    g = torch.Generator().manual_seed(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for cls in torch.unique(y):
        idx = torch.nonzero(y == cls).reshape(-1)
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        n_test, n_val = round(test_share * idx.numel()), round(val_share * idx.numel())
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    return tuple(torch.cat(p).sort().values for p in parts)


@DATASETS.register("digits")
def load(root: Path | None = None, *, seed: int = 0, download: bool = False, limit: int | None = None, **options):
    """Digits as (1, 8, 8) float images; ``root`` and ``download`` are ignored (embedded data),
    except that a ``root`` naming an existing non-folder (``--data-dir FILE``) is refused like in
    every loader."""
    from sklearn.datasets import load_digits

    if root is not None:
        refuse_non_folder("digits", Path(root), "the digits data ship with scikit-learn: drop --data-dir")
    check_limit("digits", limit)
    opts = check_options("digits", options, DEFAULTS)
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    splits = _stratified_split(y, opts["val_share"], opts["test_share"], opts["split_seed"])
    if limit is not None:
        splits = tuple(s[:limit] for s in splits)
    datasets = [TensorDataset(x[s], y[s]) for s in splits]
    fp = fingerprint([("sklearn-digits", x.numel())], options=opts, limit=limit, checksum=float(x.sum()))
    return DataSplits(*datasets, num_classes=10, input_shape=(1, 8, 8), multilabel=False, fingerprint=fp)
