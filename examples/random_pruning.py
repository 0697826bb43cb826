"""Random pruning: a worked example of a researcher's own method (this file plus one suite YAML).

A fixed random share of every compressed layer's weights is set to zero before training; the
survivors train on in float32 through the straight-through machinery every method shares.
``examples/random_pruning.yaml`` names this file under ``plugins:``; nothing else is edited:

    .venv/bin/ecqx-bench suite examples/random_pruning.yaml --quick
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ecqx import METHODS, LatentMethod
from ecqx.checks import check_int, check_range


@METHODS.register("random_pruning")
class RandomPruning(LatentMethod):
    """Prune a random ``sparsity`` share of each layer once, then train the survivors (float32)."""

    setting_params = ("sparsity",)  # labels a setting in the tables: "sparsity=0.8"

    @dataclass(frozen=True)
    class Config:
        sparsity: float = 0.5  # s: share of each layer's weights set to zero, drawn uniformly once
        seed: int = 0  # seed of the random masks
        skip_first: bool = False  # keep the first Linear/Conv layer dense
        skip_last: bool = False  # keep the last Linear/Conv layer dense

        def __post_init__(self) -> None:
            check_range("sparsity", self.sparsity, 0.0, 1.0)
            check_int("seed", self.seed, 0)

    def compress(self, model: nn.Module, batch) -> None:
        """Draw the masks once (in ``prepare``, where ``batch`` is None); later steps keep them."""
        if batch is None:
            g = torch.Generator().manual_seed(self.config.seed)
            self.masks = {
                name: (torch.rand(w.shape, generator=g) >= self.config.sparsity).to(w.device)
                for name, w in self.latent.items()
            }

    def float_values(self, name: str) -> Tensor:
        """Surviving latent weights; pruned ones +0.0."""
        return torch.where(self.masks[name], self.latent[name], 0.0)

    @property
    def sparsity_reached(self) -> float:
        """Share of zero weights over all compressed layers (a fraction)."""
        total = sum(m.numel() for m in self.masks.values())
        return sum(int((~m).sum()) for m in self.masks.values()) / max(total, 1)
