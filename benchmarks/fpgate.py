"""The FP sanity gate: a suite quantizes only an FP model that learned more than its task's trivial baseline.

Trivial baseline: the prediction of a model that learned only the training split's label shares
(the label prior), scored exactly like the task metric (:func:`benchmarks.train.task_metrics`):

- single-label (accuracy): every example gets the training split's majority class, so the baseline is
  that class's share of the evaluated split;
- multi-label (mAP): every example gets, per class, the class's positive share in training as its
  score; all examples tie, so each class's AP is its positive share in the evaluated split (the
  label prior mAP), over the same classes (those with positives) as the model's mAP.

Gate: skill = (FP val metric - trivial val metric) / (1 - trivial val metric), the share of the gap
between the trivial baseline and a perfect score that the FP model closes. With ``skill <
cfg.fp_margin`` (default in ``RunConfig``) the FP stage raises :class:`FpGateError` (one line: the
FP metric, the baseline and the fix) before any MLflow run of a method starts, unless
``cfg.fp_gate`` is false; then the run proceeds and is tagged ``fp_gate=overridden`` (tables and
reports flag it, the leaderboard leaves it out). Runs that clear the bar are tagged ``fp_gate=passed``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from benchmarks.config import RunConfig
from benchmarks.data import DataSplits
from benchmarks.models import MODELS
from benchmarks.train import resolve_device, task_metrics

PASSED, OVERRIDDEN = "passed", "overridden"  # values of the fp_gate tag
TAG, RECIPE_TAG = "fp_gate", "recipe"
Log = Callable[[str], None]


class FpGateError(ValueError):
    """The FP model is within the margin of its task's trivial baseline (the message is one line)."""


# ------------------------------------------------------------------ trivial baseline


def split_targets(dataset: Dataset) -> torch.Tensor:
    """The targets of a split without decoding inputs: int64 (N,) classes or float32 (N, C) 0/1.
    Reads the loaders' label tensors (``targets``, ``labels``, ``y``, a TensorDataset's last
    tensor); any other dataset is iterated once."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[-1]
    for name in ("targets", "labels", "y"):
        value = getattr(dataset, name, None)
        if isinstance(value, torch.Tensor) and len(value) == len(dataset):
            return value
    return torch.stack([torch.as_tensor(dataset[i][1]) for i in range(len(dataset))])


def prior_scores(train_targets: torch.Tensor, num_classes: int, multilabel: bool) -> torch.Tensor:
    """float32 (C,): the training split's label shares (positive share per class for multi-label,
    class share for single-label)."""
    if multilabel:
        return train_targets.float().mean(0)
    return torch.bincount(train_targets.long(), minlength=num_classes).float() / max(len(train_targets), 1)


def trivial_metric(prior: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> float:
    """The task metric (fraction) of scoring every example of ``targets`` by ``prior`` (C,)."""
    scores = prior.expand(len(targets), -1).clone()
    return task_metrics(scores, targets, multilabel)["map" if multilabel else "accuracy"]


def trivial_baselines(data: DataSplits) -> dict[str, float]:
    """{"val": ..., "test": ...}: the label-prior predictor's task metric (fraction) on each split."""
    prior = prior_scores(split_targets(data.train), data.num_classes, data.multilabel)
    return {
        name: trivial_metric(prior, split_targets(getattr(data, name)), data.multilabel) for name in ("val", "test")
    }


def skill(fp: float, trivial: float) -> float:
    """Share of the gap between the trivial baseline and a perfect score (1.0) closed by ``fp``
    (fractions); NaN when either is NaN."""
    return (fp - trivial) / max(1.0 - trivial, 1e-12)


# ------------------------------------------------------------------ the verdict


@dataclass
class Verdict:
    """The gate's finding on one FP model. Metrics are fractions; ``skill`` see :func:`skill`."""

    metric: str  # accuracy | map
    fp_val: float
    fp_test: float
    trivial_val: float
    trivial_test: float
    margin: float
    history: list[dict[str, Any]] = field(default_factory=list)  # the FP stage's per-epoch rows

    @property
    def skill(self) -> float:
        return skill(self.fp_val, self.trivial_val)

    @property
    def passed(self) -> bool:
        return math.isfinite(self.skill) and self.skill >= self.margin

    @property
    def status(self) -> str:
        return PASSED if self.passed else OVERRIDDEN

    def metrics(self) -> dict[str, float]:
        """MLflow metrics of the run: ``trivial_val_<metric>``, ``trivial_test_<metric>``,
        ``fp_val_<metric>`` (fractions) and ``fp_skill``."""
        m = self.metric
        return {
            f"trivial_val_{m}": self.trivial_val,
            f"trivial_test_{m}": self.trivial_test,
            f"fp_val_{m}": self.fp_val,
        }


def baseline_name(metric: str) -> str:
    return "label prior" if metric == "map" else "majority class"


def _has_pretrained_option(model: str) -> bool:
    try:
        return "pretrained" in inspect.signature(MODELS.get(model)).parameters
    except (TypeError, ValueError):
        return False


def finding(cfg: RunConfig, v: Verdict) -> str:
    """What the gate found: the run's model, the FP val metric, the trivial baseline and the bar (%)."""
    name, pct = ("mAP" if v.metric == "map" else "accuracy"), lambda x: f"{100 * x:.1f}%"
    recipe = f", recipe {cfg.recipe}" if cfg.recipe else ""
    return (
        f"{cfg.model.name} seed {cfg.seed} (suite {cfg.suite}{recipe}): FP val {name} {pct(v.fp_val)} vs trivial "
        f"baseline ({baseline_name(v.metric)}) {pct(v.trivial_val)} closes {pct(v.skill)} of the gap to 100% "
        f"(needs fp_margin {pct(v.margin)})"
    )


def message(cfg: RunConfig, v: Verdict) -> str:
    """The one line that stops a suite: the finding and the fix."""
    weights = "pretrained weights" + (
        " (model.options.pretrained=PATH)" if _has_pretrained_option(cfg.model.name) else ""
    )
    return (
        f"FP gate: {finding(cfg, v)}: the methods would compress a model that learned next to nothing. Fix: "
        f"{weights}, more epochs (pretrain.epochs, now {cfg.pretrain.epochs}) or another learning rate "
        f"(pretrain.lr, now {cfg.pretrain.lr:g}); to proceed on purpose: --allow-weak-fp (fp_gate=false; runs "
        f"tagged fp_gate={OVERRIDDEN}, kept off the leaderboard)"
    )


# ------------------------------------------------------------------ the FP stage behind the gate


def fp_stage(cfg: RunConfig, data: DataSplits, cache_dir: Path, log: Log = print) -> Verdict:
    """Train (or load from the checkpoint cache) the FP model of ``cfg``, judge it against the trivial
    baseline and raise :class:`FpGateError` when it is too weak and ``cfg.fp_gate`` holds. Starts no
    MLflow run (the pretraining epochs are printed through ``log``; they are logged to each run from
    the returned history)."""
    from benchmarks.runner import pretrained_model

    def show(stage: str, epoch: int, row: dict[str, Any]) -> None:
        shown = [f"{k} {x:.4f}" for k, x in row.items() if k != "epoch" and isinstance(x, int | float)]
        log(f"    {stage} epoch {epoch}: " + ", ".join(shown))

    # the run loads the same checkpoint right after and says so: one "(cached)" line per run, not two
    _, info = pretrained_model(cfg, data, resolve_device(cfg.device), cache_dir, log, show, say_cached=False)
    trivial = trivial_baselines(data)
    verdict = Verdict(
        data.task_metric,
        info["fp_val"],
        info["fp_test"],
        trivial["val"],
        trivial["test"],
        cfg.fp_margin,
        list(info.get("history", [])),
    )
    if not verdict.passed:
        if cfg.fp_gate:
            raise FpGateError(message(cfg, verdict))
        log(f"  FP gate {OVERRIDDEN} (fp_gate=false): {finding(cfg, verdict)}")
    return verdict


def log_verdict(v: Verdict, cfg: RunConfig) -> None:
    """Log the verdict to the active MLflow run: its metrics, the tags ``fp_gate`` and (for suites with
    recipes) ``recipe``, and the FP stage's per-epoch rows as ``pretrain_<key>`` metrics."""
    from benchmarks.runs import _mlflow

    mlflow = _mlflow()
    mlflow.log_metrics({**v.metrics(), "fp_skill": v.skill})
    mlflow.set_tags({TAG: v.status, **({RECIPE_TAG: cfg.recipe} if cfg.recipe else {})})
    for row in v.history:
        values = {f"pretrain_{k}": float(x) for k, x in row.items() if k != "epoch" and isinstance(x, int | float)}
        mlflow.log_metrics(values, step=int(row.get("epoch", 0)))
