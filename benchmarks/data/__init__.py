"""Data sets: one registry of loaders that read standard on-disk layouts (never download in tests).

A loader is registered as ``@DATASETS.register(name)`` on a function

    load(root: Path | None, *, seed: int, download: bool = False, limit: int | None = None,
         **options) -> DataSplits

``root`` is the user's data folder (``--data-dir``); ``limit`` caps the number of examples per split
(quick/smoke runs); ``options`` are the data set's own config keys.
"""

from benchmarks.data import cifar, digits, gsc, voc  # noqa: F401  (each registers its loader)
from benchmarks.data.splits import DATASETS, DatasetError, DataSplits

__all__ = ["DATASETS", "DataSplits", "DatasetError"]
