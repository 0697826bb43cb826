"""The embedded default data set: scikit-learn's handwritten digits (1,797 real 8x8 scans, 10 classes).

Ships inside scikit-learn, so a fresh clone runs the default suite with no download. A fixed split
(seed ``split_seed``, independent of the run seed, so every seed shares one test set): 60 % train,
20 % validation, 20 % test, stratified by class. Pixels (0..16) are scaled to [0, 1].

Options: ``split`` ``stratified`` (a per-class seeded shuffle) or ``sklearn`` (two stratified
``train_test_split`` calls with ``random_state=split_seed``: test, then validation from the rest, as
the official ECQx code's digits setup: 1077 / 360 / 360); ``flat`` gives 64-vectors instead of
(1, 8, 8) images.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from benchmarks.data.common import check_limit, check_options, fingerprint, refuse_non_folder
from benchmarks.data.splits import DATASETS, DatasetError, DataSplits

DEFAULTS = {"split_seed": 0, "val_share": 0.2, "test_share": 0.2, "split": "stratified", "flat": False}
SPLITS = ("stratified", "sklearn")
ADDED = ("split", "flat")  # options added later: part of the fingerprint only when not default


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


def _sklearn_split(y: torch.Tensor, val_share: float, test_share: float, seed: int):
    """train_test_split(test_share, stratified, random_state=seed), then the validation share of the
    whole (val_share / (1 - test_share) of the rest) the same way: (train, val, test) indices."""
    from sklearn.model_selection import train_test_split

    idx = torch.arange(y.numel())
    rest, test = train_test_split(idx.numpy(), test_size=test_share, stratify=y.numpy(), random_state=seed)
    val_of_rest = val_share / (1.0 - test_share)
    train, val = train_test_split(rest, test_size=val_of_rest, stratify=y.numpy()[rest], random_state=seed)
    return tuple(torch.as_tensor(part) for part in (train, val, test))


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
    if opts["split"] not in SPLITS:
        raise DatasetError(f"digits: split must be one of {', '.join(SPLITS)}, got {opts['split']!r}")
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = x.reshape(len(x), -1) if opts["flat"] else x
    y = torch.tensor(bunch.target, dtype=torch.long)
    split = _sklearn_split if opts["split"] == "sklearn" else _stratified_split
    splits = split(y, opts["val_share"], opts["test_share"], opts["split_seed"])
    if limit is not None:
        splits = tuple(s[:limit] for s in splits)
    datasets = [TensorDataset(x[s], y[s]) for s in splits]
    stable = {k: v for k, v in opts.items() if k not in ADDED or v != DEFAULTS[k]}  # older identities unchanged
    fp = fingerprint([("sklearn-digits", x.numel())], options=stable, limit=limit, checksum=float(x.sum()))
    shape = tuple(x.shape[1:])
    return DataSplits(*datasets, num_classes=10, input_shape=shape, multilabel=False, fingerprint=fp)
