"""ECQx: entropy-constrained quantization with LRP relevance (and plain ECQ with relevance off)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ecqx.assignment import LAMBDA_MAX_RULES, assign_layer
from ecqx.codebook import Grid, check_bits, make_grid
from ecqx.method import METHODS, GridMethod


def check_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    """Raise ValueError unless ``value`` lies in [low, high] (or (low, high] with ``low_open``)."""
    ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value!r}")


@METHODS.register("ecqx")
class ECQx(GridMethod):
    """Explainability-driven quantization (Becking et al. 2022)."""

    @dataclass(frozen=True)
    class Config:
        bits: int = 4  # b: bit width; 2^b centroids per layer, one of them exactly 0
        Lambda: float = 0.2  # Λ: entropy-constraint strength, as a share of each layer's λ_max
        p: float = 0.1  # p: ECQx sparsity band [s_ECQ - p, s_ECQ] per layer
        rho: float = 2.0  # ρ: scale of the zero cluster's relevance factor ρ·R^β
        alpha: float = 0.1  # α: EMA weight of the previous relevance (R = α·R_prev + (1-α)·R_new)
        relevance: bool = True  # use LRP relevance (False gives plain ECQ)
        relevance_every: int = 1  # k: compute relevances every k steps, EMA in between
        composite: str = "epsilon_plus_flat"  # zennit composite for input relevances
        canonizer: str = "auto"  # none | sequential_bn | resnet | auto (model.lrp_canonizer)
        epsilon: float = 1e-6  # ε of the epsilon weight rule
        lambda_max_rule: str = "thesis"  # thesis | reference (official code's λ_max)
        skip_first: bool = False  # keep the first Linear/Conv layer in FP32
        skip_last: bool = False  # keep the last Linear/Conv layer in FP32

        def __post_init__(self) -> None:
            check_bits(self.bits)
            check_range("Lambda (Λ)", self.Lambda, 0.0, float("inf"))
            check_range("p", self.p, 0.0, 1.0)
            check_range("rho (ρ)", self.rho, 0.0, float("inf"), low_open=True)
            check_range("alpha (α)", self.alpha, 0.0, 0.999999)
            if not isinstance(self.relevance_every, int) or self.relevance_every < 1:
                raise ValueError(f"relevance_every must be an integer >= 1, got {self.relevance_every!r}")
            if self.lambda_max_rule not in LAMBDA_MAX_RULES:
                raise ValueError(
                    f"lambda_max_rule must be one of {', '.join(LAMBDA_MAX_RULES)}, got {self.lambda_max_rule!r}"
                )

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self.relevance: dict[str, Tensor] = {}
        self.layer_stats: dict[str, dict[str, float | None]] = {}
        self._lrp = None

    def make_grid(self, name: str, weight: Tensor) -> Grid:
        return make_grid(weight, self.config.bits)

    def _relevance_engine(self, model: nn.Module):
        if self._lrp is None:
            from ecqx.relevance import WeightRelevance  # zennit is imported only when relevance is on

            canonizer = self.config.canonizer
            if canonizer == "auto":
                canonizer = getattr(model, "lrp_canonizer", "none")
            self._lrp = WeightRelevance(self.config.composite, canonizer, self.config.epsilon)
        return self._lrp

    def update_relevance(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> None:
        """LRP on the current compressed model for ``batch``; EMA into ``self.relevance``."""
        self.write_all()  # relevances are those of the quantized network that saw this batch
        x, y = batch
        fresh = self._relevance_engine(model)(model, x, y, self.layers)
        a = self.config.alpha
        for name, r in fresh.items():
            prev = self.relevance.get(name)
            self.relevance[name] = r if prev is None else prev.mul_(a).add_(r, alpha=1.0 - a)

    def normalised_relevance(self, name: str) -> Tensor | None:
        """|EMA relevance| / max, in [0, 1] (None before the first LRP pass or if all zero)."""
        r = self.relevance.get(name)
        if r is None:
            return None
        r = r.abs()
        top = r.max()
        return r.div_(top) if top > 0 else None

    def finalize(self, model: nn.Module):
        """As GridMethod.finalize; also records each layer's share of the total |relevance|."""
        totals = {name: float(r.abs().sum()) for name, r in self.relevance.items()}
        grand = sum(totals.values())
        for name, stats in self.layer_stats.items():
            stats["relevance_share"] = totals.get(name, 0.0) / grand if grand > 0 else None
        return super().finalize(model)

    def assign_all(self, model: nn.Module, batch) -> None:
        cfg = self.config
        if cfg.relevance and batch is not None and (self.step - 1) % cfg.relevance_every == 0:
            self.update_relevance(model, batch)
        n_max = max(w.numel() for w in self.latent.values())
        for name, latent in self.latent.items():
            relevance = self.normalised_relevance(name) if cfg.relevance else None
            centroids = self.centroids[name]
            index_dtype = torch.uint8 if centroids.numel() <= 256 else torch.int16
            a = assign_layer(
                latent,
                centroids,
                cfg.Lambda,
                latent.numel() / n_max,
                relevance,
                cfg.p,
                cfg.rho,
                cfg.lambda_max_rule,
                index_dtype=index_dtype,
            )
            self.indices[name] = self.compact(a.indices)
            self.layer_stats[name] = {"lambda": a.lam, "ecq_sparsity": a.ecq_sparsity, "beta": a.beta}
