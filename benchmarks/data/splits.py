"""The data-set registry and what every loader returns (:class:`DataSplits`) or raises."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from ecqx.registry import Registry


class DatasetError(RuntimeError):
    """A missing or malformed data set; the message says what, where, and how to get it."""


@dataclass
class DataSplits:
    """Train/validation/test splits of one task.

    train, val, test: map-style datasets yielding ``(input tensor, target)``; target is an int class
        (single-label) or a float32 0/1 vector of length ``num_classes`` (multi-label).
    num_classes: number of classes.
    input_shape: shape of one input tensor, e.g. (64,) or (3, 32, 32).
    multilabel: True for multi-label tasks (BCE loss, mAP metric).
    fingerprint: short hash identifying the data (files, split, options) for run identity.
    train_transform: optional callable applied to training inputs only (augmentation) by the loop.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    multilabel: bool = False
    fingerprint: str = ""

    @property
    def task_metric(self) -> str:
        """'map' for multi-label tasks, else 'accuracy'."""
        return "map" if self.multilabel else "accuracy"


DATASETS: Registry = Registry("dataset")
