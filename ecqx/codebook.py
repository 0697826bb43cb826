"""Per-layer codebooks (grids): uniformly spaced centroids that always contain exactly 0.

Two grids: ECQ's 2^b levels with one extra level on the side a vote picks (:func:`make_grid`, the
official ECQx code's ``initialize_centroids``), and uniform QAT's symmetric 2^b - 1 levels
(:func:`symmetric_grid`). Step sizes Δ are in weight units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ecqx.checks import MAX_BITS, MIN_BITS, check_bits

PERCENTILE = 99.9  # the step Δ is set from this percentile of |W|
SCALES = ("percentile", "max")  # symmetric grid range: P99.9 of |W| or max |W|
__all__ = [
    "MAX_BITS",
    "MIN_BITS",
    "PERCENTILE",
    "SCALES",
    "Grid",
    "check_bits",
    "codebook",
    "make_grid",
    "percentile_abs",
    "symmetric_grid",
]


@dataclass(frozen=True)
class Grid:
    """A uniform grid ``{k_min, ..., k_max} · step``; k = 0 is the zero level.

    step: Δ (weight units); k_min <= 0 <= k_max; k_max - k_min + 1 <= 2^bits.
    """

    step: float
    k_min: int
    k_max: int
    bits: int

    @property
    def num_levels(self) -> int:
        return self.k_max - self.k_min + 1

    @property
    def zero_index(self) -> int:
        """Position of the zero level in :meth:`centroids`."""
        return -self.k_min

    def centroids(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """Ascending centroid values, shape (num_levels,)."""
        k = torch.arange(self.k_min, self.k_max + 1, device=device, dtype=torch.float64)
        return (k * self.step).to(dtype)


def percentile_abs(weight: Tensor, q: float) -> float:
    """q-th percentile of |W| with linear interpolation (numpy's default)."""
    flat = weight.detach().abs().flatten().to(torch.float64)
    if flat.numel() > 16_000_000:  # torch.quantile's input limit; kthvalue is exact too
        pos = (flat.numel() - 1) * q / 100.0
        lo = int(pos)
        hi = min(lo + 1, flat.numel() - 1)
        v_lo = flat.kthvalue(lo + 1).values.item()
        v_hi = flat.kthvalue(hi + 1).values.item()
        return v_lo + (v_hi - v_lo) * (pos - lo)
    return torch.quantile(flat, q / 100.0).item()


def _extra_level_positive(weight: Tensor) -> bool:
    """Vote (max, mean, count, sum, spread of positive vs negative weights) for the extra level's side."""
    w = weight.detach().to(torch.float64).flatten()
    pos, neg = w[w > 0], -w[w < 0]
    if pos.numel() == 0 or neg.numel() == 0:
        return pos.numel() >= neg.numel()
    std = lambda t: t.std().item() if t.numel() > 1 else 0.0  # noqa: E731
    votes = [
        pos.max() > neg.max(),
        pos.mean() > neg.mean(),
        pos.numel() > neg.numel(),
        pos.sum() > neg.sum(),
        std(pos) > std(neg),
    ]
    return sum(bool(v) for v in votes) > len(votes) // 2


def make_grid(weight: Tensor, bits: int) -> Grid:
    """The layer's grid for ``bits``: Δ = P99.9(|W|) / (2^(b-1) - 1), or an unsigned grid
    ``{0..2^b-1}·Δ`` with Δ = P99.9(|W|) / (2^b - 1) when the layer has no negative weights.
    A zero percentile falls back to max |W|; an all-zero layer gets Δ = 1."""
    check_bits(bits)
    unsigned = not bool((weight < 0).any())
    denom = 2**bits - 1 if unsigned else 2 ** (bits - 1) - 1
    step = percentile_abs(weight, PERCENTILE) / denom
    if step == 0.0:
        step = weight.detach().abs().max().item() / denom if weight.numel() else 0.0
    if step == 0.0:
        step = 1.0
    if unsigned:
        return Grid(step, 0, 2**bits - 1, bits)
    half = 2 ** (bits - 1)
    if _extra_level_positive(weight):
        return Grid(step, -half + 1, half, bits)
    return Grid(step, -half, half - 1, bits)


def codebook(weight: Tensor, bits: int) -> Tensor:
    """Ascending centroid values (float32, shape (2^b,)) for ``weight``; contains exactly 0."""
    return make_grid(weight, bits).centroids(torch.float32, weight.device)


def symmetric_grid(weight: Tensor, bits: int, scale: str = "percentile") -> Grid:
    """Uniform QAT's grid: 2^b - 1 levels {-(2^(b-1)-1) .. 2^(b-1)-1}·Δ with Δ = s / (2^(b-1) - 1),
    where s is the 99.9th percentile (``percentile``) or the maximum (``max``) of |W|; a zero
    percentile falls back to max |W|; Δ = 1 for an all-zero layer."""
    check_bits(bits)
    half = 2 ** (bits - 1) - 1
    s = percentile_abs(weight, PERCENTILE) if scale == "percentile" else weight.detach().abs().max().item()
    if s == 0.0:
        s = weight.detach().abs().max().item()
    return Grid(s / half if s > 0 else 1.0, -half, half, bits)
