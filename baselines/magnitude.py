"""Gradual magnitude pruning (Zhu & Gupta 2017), optionally with uniform quantization of survivors.

Sparsity schedule over optimizer steps t: s_t = s_f · (1 - (1 - (t - t_0)/(t_1 - t_0))^3) for
t_0 <= t <= t_1, 0 before, s_f after; masks only ever grow, and training after t_1 fine-tunes with
fixed masks. Pruning is global (one magnitude threshold over all layers) or per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ecqx.assignment import nearest_indices
from ecqx.checks import check_bits, check_choice, check_int, check_range
from ecqx.codebook import SCALES, Grid, symmetric_grid
from ecqx.latent import LatentMethod
from ecqx.method import METHODS
from ecqx.profiles import resolve_profile

SCOPES = ("global", "layer")


def schedule(step: int, total: int, target: float, start: float, end: float) -> float:
    """Sparsity s_t at optimizer step ``step`` of ``total`` (cubic ramp from start·total to end·total)."""
    t0, t1 = start * total, end * total
    if total <= 0 or step >= t1:
        return target
    if step <= t0:
        return 0.0
    return target * (1.0 - (1.0 - (step - t0) / (t1 - t0)) ** 3)


def prune_masks(scores: dict[str, Tensor], sparsity: float, scope: str) -> dict[str, Tensor]:
    """Keep-masks (bool) removing the ``sparsity`` share of smallest scores, globally or per layer."""
    if scope == "layer":
        return {name: prune_masks({name: s}, sparsity, "global")[name] for name, s in scores.items()}
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    k = int(round(sparsity * flat.numel()))
    if k <= 0:
        return {name: torch.ones_like(s, dtype=torch.bool) for name, s in scores.items()}
    order = torch.argsort(flat, stable=True)  # ties: earlier weights go first, deterministic
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[order[:k]] = False
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = keep[start : start + s.numel()].reshape(s.shape)
        start += s.numel()
    return out


@METHODS.register("magnitude")
class MagnitudePruning(LatentMethod):
    """Gradual magnitude pruning to ``target_sparsity``; ``bits`` also quantizes the survivors."""

    setting_params = ("target_sparsity",)

    @dataclass(frozen=True)
    class Config:
        target_sparsity: float = 0.9  # s_f: final share of zero weights
        start: float = 0.0  # t_0 as a fraction of all optimizer steps
        end: float = 0.6  # t_1 as a fraction of all optimizer steps (then fixed-mask fine-tuning)
        update_every: int = 5  # Δt: steps between mask updates
        scope: str = "global"  # global | layer
        bits: int | None = None  # b: quantize survivors to a symmetric b-bit grid; None keeps FP32
        scale: str = "percentile"  # grid range for bits (see uniform_qat)
        profile: str = "clean"  # clean | reference (ecqx.profiles): no switch here, accepted suite-wide
        skip_first: bool = False  # keep the first Linear/Conv layer dense and FP32
        skip_last: bool = False  # keep the last Linear/Conv layer dense and FP32

        def __post_init__(self) -> None:
            resolve_profile(self)
            check_range("target_sparsity", self.target_sparsity, 0.0, 1.0)
            check_range("start", self.start, 0.0, 1.0)
            check_range("end", self.end, self.start, 1.0)
            check_int("update_every", self.update_every, 1)
            check_choice("scope", self.scope, SCOPES)
            check_choice("scale", self.scale, SCALES)
            if self.bits is not None:
                check_bits(self.bits)

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self.masks: dict[str, Tensor] = {}
        self.sparsity = -1.0

    @property
    def selectable(self) -> bool:
        """Only once the schedule has reached the target sparsity."""
        return self.sparsity >= self.config.target_sparsity

    def make_grid(self, name: str, weight: Tensor) -> Grid | None:
        """The symmetric b-bit grid of uniform QAT for the survivors, or None (float32 survivors)."""
        bits = self.config.bits
        return symmetric_grid(weight, bits, self.config.scale) if bits is not None else None

    def float_values(self, name: str) -> Tensor:
        """Surviving latent weights, pruned ones +0.0 (never -0.0: the coder would keep it as a survivor)."""
        return torch.where(self.masks[name], self.latent[name], 0.0)

    def _update_masks(self) -> None:
        cfg = self.config
        target = schedule(self.step, self.total_steps, cfg.target_sparsity, cfg.start, cfg.end)
        due = not self.masks or self.step % cfg.update_every == 0 or target >= cfg.target_sparsity
        if not due or (self.masks and target <= self.sparsity):
            return
        # already-pruned weights score -1 so masks only ever grow
        scores = {
            n: torch.where(self.masks[n], w.abs(), -1.0) if self.masks else w.abs() for n, w in self.latent.items()
        }
        self.masks = prune_masks(scores, target, cfg.scope)
        self.sparsity = target

    def compress(self, model: nn.Module, batch) -> None:
        self._update_masks()
        for name in self.grids:
            latent = self.latent[name]
            grid = self.grids[name]
            idx = nearest_indices(latent, self.centroids[name])
            idx = torch.where(self.masks[name], idx, torch.full_like(idx, grid.zero_index))
            self.indices[name] = self.compact(idx)
