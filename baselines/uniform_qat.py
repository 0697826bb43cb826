"""Uniform quantization-aware training: a symmetric per-layer grid, nearest rounding, STE."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ecqx.assignment import nearest_indices
from ecqx.checks import check_bits, check_choice
from ecqx.codebook import SCALES, Grid, symmetric_grid
from ecqx.latent import LatentMethod
from ecqx.method import METHODS
from ecqx.profiles import resolve_profile
from ecqx.ste import STE_RULES


@METHODS.register("uniform_qat")
class UniformQAT(LatentMethod):
    """Round every weight to the nearest level of its layer's symmetric grid after each step."""

    @dataclass(frozen=True)
    class Config:
        bits: int = 4  # b: bit width (2^b - 1 symmetric levels including 0)
        scale: str = "percentile"  # grid range from the 99.9th percentile or the max of |W|
        profile: str = "clean"  # clean | reference: the default of ``ste`` (ecqx.profiles)
        ste: str | None = None  # straight-through estimator: identity | centroid_signed | centroid_magnitude
        skip_first: bool = False  # keep the first Linear/Conv layer in FP32
        skip_last: bool = False  # keep the last Linear/Conv layer in FP32

        def __post_init__(self) -> None:
            resolve_profile(self)
            check_bits(self.bits)
            check_choice("scale", self.scale, SCALES)
            check_choice("ste", self.ste, STE_RULES)

    def make_grid(self, name: str, weight: Tensor) -> Grid:
        return symmetric_grid(weight, self.config.bits, self.config.scale)

    def compress(self, model: nn.Module, batch) -> None:
        for name, latent in self.latent.items():
            self.indices[name] = self.compact(nearest_indices(latent, self.centroids[name], dtype=torch.uint8))
