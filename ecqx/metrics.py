"""Metrics of a compressed model, computed once from its QuantizedModel, the same for every method.

Units: sparsity is a fraction of weights; entropy in bits per weight; sizes in bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ecqx.quantized import QuantizedModel

FP32_BYTES = 4


def zero_order_entropy(values: Tensor) -> float:
    """H = -Σ p_v log2 p_v over the distinct values of ``values`` (bits per element)."""
    if values.numel() == 0:
        return 0.0
    _, counts = torch.unique(values.reshape(-1), return_counts=True)
    p = counts.to(torch.float64) / values.numel()
    return float(-(p * torch.log2(p)).sum())


def binary_entropy(s: float) -> float:
    """h(s) in bits: entropy of a zero/non-zero mask with zero share ``s``."""
    return 0.0 if s in (0.0, 1.0) else -(s * math.log2(s) + (1 - s) * math.log2(1 - s))


@dataclass(frozen=True)
class LayerMetrics:
    """Per-layer metrics. bits: codebook bit width (32 for an unquantized, pruned layer)."""

    name: str
    params: int
    bits: int
    sparsity: float
    distinct_values: int
    entropy_bits_per_weight: float
    entropy_bound_bytes: float


@dataclass(frozen=True)
class ModelMetrics:
    """Whole-model metrics over the compressed (target) weights, plus sizes of the state dict."""

    sparsity: float
    entropy_bits_per_weight: float
    entropy_bound_bytes: float
    fp32_bytes: int
    compression_ratio_entropy: float
    target_params: int
    total_params: int
    layers: tuple[LayerMetrics, ...]

    def summary(self) -> dict[str, float]:
        """Flat dict of the whole-model numbers (no per-layer rows)."""
        d = asdict(self)
        d.pop("layers")
        return d


def layer_metrics(qm: QuantizedModel, name: str) -> LayerMetrics:
    """Metrics of target ``name``. A quantized layer's entropy is the zero-order entropy H of its
    levels (bound N·H/8 bytes); a pruned FP32 layer's is h(s) for the mask plus 32 bits per survivor."""
    values = qm.target_values(name)
    n = values.numel()
    zeros = int((values == 0).sum())
    sparsity = zeros / n if n else 0.0
    entropy = zero_order_entropy(values)
    if name in qm.quantized:
        bits, bound = qm.quantized[name].bits, n * entropy / 8
    else:  # FP32 survivors: the mask's entropy plus 32 bits per survivor
        bits, entropy = 32, binary_entropy(sparsity) + (1 - sparsity) * 8 * FP32_BYTES
        bound = n * entropy / 8
    distinct = int(torch.unique(values).numel())
    return LayerMetrics(name, n, bits, sparsity, distinct, entropy, bound)


def model_metrics(qm: QuantizedModel) -> ModelMetrics:
    """Whole-model metrics: sparsity and entropy over targets; entropy-bound size = targets' bounds
    + the other state-dict entries at 4 bytes each; FP32 size = 4 bytes x every state-dict entry."""
    layers = tuple(layer_metrics(qm, name) for name in qm.targets)
    target_params = sum(m.params for m in layers)
    other = sum(t.numel() for k, t in qm.float_params.items() if k not in qm.targets)
    total = target_params + other
    fp32 = FP32_BYTES * total
    bound = sum(m.entropy_bound_bytes for m in layers) + FP32_BYTES * other
    weighted = lambda attr: sum(getattr(m, attr) * m.params for m in layers) / max(target_params, 1)  # noqa: E731
    return ModelMetrics(
        sparsity=weighted("sparsity"),
        entropy_bits_per_weight=weighted("entropy_bits_per_weight"),
        entropy_bound_bytes=bound,
        fp32_bytes=fp32,
        compression_ratio_entropy=fp32 / bound if bound > 0 else math.inf,
        target_params=target_params,
        total_params=total,
        layers=layers,
    )
