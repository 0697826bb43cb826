"""The one training loop shared by every method: FP pretraining and quantization-aware training.

Model selection is on the validation split (never the test set): after every epoch the model is
evaluated on validation and the best epoch's weights (for QAT: its compressed model) are kept.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.config import OptimConfig

EpochCallback = Callable[[str, int, dict[str, float]], None]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, workers: int = 0) -> DataLoader:
    """A DataLoader whose shuffling order is fixed by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=g,
        num_workers=workers,
        pin_memory=False,
        persistent_workers=workers > 0,
    )


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """One group of every parameter, or with ``weight_decay_1d`` set two: the 1-D parameters
    (biases, BatchNorm) with that weight decay, then all others with ``weight_decay``."""
    params = list(model.parameters())
    if cfg.weight_decay_1d is None:
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    flat = [p for p in params if p.dim() <= 1]
    rest = [p for p in params if p.dim() > 1]
    return [{"params": flat, "weight_decay": cfg.weight_decay_1d}, {"params": rest, "weight_decay": cfg.weight_decay}]


def make_optimizer(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    raise ValueError(f"optimizer must be adam or sgd, got {cfg.optimizer!r}")


def reshuffle(train_loader: DataLoader, cfg: OptimConfig, seed: int, epoch: int) -> None:
    """``shuffle=epoch``: epoch e (1-based here) draws its order from a generator seeded with
    shuffle_offset + 1000·seed + (e - 1), as the official ECQx code does; ``stream`` keeps one
    generator, seeded once."""
    if cfg.shuffle == "epoch":
        train_loader.generator.manual_seed(cfg.shuffle_offset + 1000 * seed + epoch - 1)


def make_schedule(opt: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
        )
    raise ValueError(f"schedule must be cosine or constant, got {cfg.schedule!r}")


def loss_fn(multilabel: bool) -> nn.Module:
    return nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device):
    """(logits, targets) over ``dataset`` in eval mode, on the CPU."""
    model.eval()
    outs, targets = [], []
    for x, y in loader(dataset, batch_size, shuffle=False):
        outs.append(model(x.to(device)).float().cpu())
        targets.append(y)
    return torch.cat(outs), torch.cat(targets)


def task_metrics(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> dict[str, Any]:
    """Top-1 accuracy, or (multi-label) mean average precision over classes with positives
    (scikit-learn's average_precision_score) plus the per-class APs."""
    if not multilabel:
        return {"accuracy": (logits.argmax(1) == targets).float().mean().item()}
    from sklearn.metrics import average_precision_score

    y, s = targets.numpy(), logits.numpy()
    ap = [
        float(average_precision_score(y[:, c], s[:, c])) if y[:, c].any() else float("nan") for c in range(y.shape[1])
    ]
    valid = [a for a in ap if not math.isnan(a)]
    return {"map": float(np.mean(valid)) if valid else float("nan"), "per_class_ap": ap}


def evaluate(model: nn.Module, dataset: Dataset, multilabel: bool, batch_size: int, device: torch.device) -> dict:
    logits, targets = predict(model, dataset, batch_size, device)
    return task_metrics(logits, targets, multilabel)


@dataclass
class TrainResult:
    """best_epoch: 1-based epoch chosen on validation (0 = the starting weights);
    best_val: its validation metric; best: what was kept at that epoch (state dict or compressed model)."""

    best_epoch: int
    best_val: float
    best: Any
    history: list[dict[str, float]] = field(default_factory=list)


def fit(
    model: nn.Module,
    data,
    cfg: OptimConfig,
    *,
    device: torch.device,
    seed: int,
    method=None,
    stage: str = "train",
    eval_batch_size: int = 512,
    workers: int = 0,
    on_epoch: EpochCallback | None = None,
    measure: Callable[[], dict[str, Any]] | None = None,
) -> TrainResult:
    """Train ``model`` for ``cfg.epochs`` epochs; ``method`` (if any) gets its hooks around the steps.
    Returns the epoch with the best validation metric (earliest on ties) and its weights
    (``method.finalize`` for QAT), among the epochs where ``method.selectable`` holds (a pruning
    schedule must have finished) and, with ``keep_initial``, the starting weights. ``measure()``
    adds to each epoch's history row (e.g. test metric and sparsity; never used for selection)."""
    metric = data.task_metric
    keep = (lambda: method.finalize(model)) if method is not None else (lambda: copy.deepcopy(model.state_dict()))
    train_loader = loader(data.train, cfg.batch_size, shuffle=True, seed=seed, workers=workers)
    total = cfg.epochs * len(train_loader)
    opt = make_optimizer(param_groups(model, cfg), cfg)
    sched = make_schedule(opt, cfg, total)
    criterion = loss_fn(data.multilabel)
    if method is not None:
        method.prepare(model, total_steps=total, optimizer=opt)
    selectable = lambda: method is None or method.selectable  # noqa: E731  (e.g. pruning schedule done)
    result = TrainResult(-1, -math.inf, None)
    if measure is not None or (selectable() and cfg.keep_initial):  # epoch 0: the starting weights
        val = evaluate(model, data.val, data.multilabel, eval_batch_size, device)[metric]
        if selectable() and cfg.keep_initial:
            result = TrainResult(0, val, keep())
        if measure is not None:
            result.history.append({"epoch": 0, f"val_{metric}": val, **measure()})
            if on_epoch is not None:
                on_epoch(stage, 0, result.history[0])
    for epoch in range(1, cfg.epochs + 1):
        if hasattr(data.train, "set_epoch"):
            data.train.set_epoch(epoch)
        reshuffle(train_loader, cfg, seed, epoch)
        if method is not None:
            method.start_epoch(epoch)
        model.train()
        running, count = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
            if method is not None:
                method.after_step(model, (x, y))  # before the schedule moves: it may follow this step's lr
            sched.step()
            running, count = running + loss.item() * len(x), count + len(x)
        val = evaluate(model, data.val, data.multilabel, eval_batch_size, device)[metric]
        row = {"epoch": epoch, "loss": running / max(count, 1), f"val_{metric}": val, **(measure() if measure else {})}
        result.history.append(row)
        last = epoch == cfg.epochs and result.best is None  # nothing selectable yet: take the last
        if (selectable() and val > result.best_val) or last:
            result.best_epoch, result.best_val, result.best = epoch, val, keep()
        if on_epoch is not None:
            on_epoch(stage, epoch, row)
    return result
