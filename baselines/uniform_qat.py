"""Uniform quantization-aware training: a symmetric per-layer grid, nearest rounding, STE."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ecqx.assignment import nearest_indices
from ecqx.codebook import PERCENTILE, Grid, _percentile_abs, check_bits
from ecqx.method import METHODS, GridMethod

SCALES = ("percentile", "max")


def symmetric_grid(weight: Tensor, bits: int, scale: str = "percentile") -> Grid:
    """2^b - 1 levels {-(2^(b-1)-1) .. 2^(b-1)-1}·Δ with Δ = s / (2^(b-1) - 1), where s is the
    99.9th percentile (``percentile``) or the maximum (``max``) of |W|; Δ = 1 for an all-zero layer."""
    half = 2 ** (bits - 1) - 1
    s = _percentile_abs(weight, PERCENTILE) if scale == "percentile" else weight.detach().abs().max().item()
    if s == 0.0:
        s = weight.detach().abs().max().item()
    return Grid(s / half if s > 0 else 1.0, -half, half, bits)


@METHODS.register("uniform_qat")
class UniformQAT(GridMethod):
    """Round every weight to the nearest level of its layer's symmetric grid after each step."""

    @dataclass(frozen=True)
    class Config:
        bits: int = 4  # b: bit width (2^b - 1 symmetric levels including 0)
        scale: str = "percentile"  # grid range from the 99.9th percentile or the max of |W|
        skip_first: bool = False  # keep the first Linear/Conv layer in FP32
        skip_last: bool = False  # keep the last Linear/Conv layer in FP32

        def __post_init__(self) -> None:
            check_bits(self.bits)
            if self.scale not in SCALES:
                raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")

    def make_grid(self, name: str, weight: Tensor) -> Grid:
        return symmetric_grid(weight, self.config.bits, self.config.scale)

    def assign_all(self, model: nn.Module, batch) -> None:
        for name, latent in self.latent.items():
            self.indices[name] = self.compact(nearest_indices(latent, self.centroids[name], dtype=torch.uint8))
