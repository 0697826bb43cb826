"""ECQx: entropy-constrained quantization with LRP relevance; its relevance-free core is ECQ.

:class:`EntropyConstrained` is ECQ (Wiedemann et al. 2020): after every step each layer's latent
weights are assigned by the entropy-constrained cost (``ecqx.assignment``). :class:`ECQx` (Becking
et al. 2022) adds the relevance of every weight (``ecqx.relevance``, an EMA over LRP passes) to the
zero cluster's cost. The ``ecq`` baseline is :class:`EntropyConstrained` itself: the same code path
with no relevance, so the comparison is fair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ecqx.assignment import RelevanceTerms, assign_layer, relevance_terms
from ecqx.beta import BAND_RULES
from ecqx.checks import check_bits, check_choice, check_int, check_range
from ecqx.codebook import Grid, make_grid
from ecqx.entropy import LAMBDA_MAX_RULES, PMF_RULES
from ecqx.latent import LatentMethod
from ecqx.method import METHODS
from ecqx.profiles import RELEVANCE_MODELS, RELEVANCE_RESETS, RELEVANCE_STARTS, resolve_profile
from ecqx.ste import STE_RULES


@dataclass(frozen=True)
class ECQConfig:
    """ECQ's hyperparameters (shared by ECQx). Fields left None take the value of ``profile``
    (``ecqx.profiles``: clean formulation or the official code's behaviour)."""

    bits: int = 4  # b: bit width; 2^b centroids per layer, one of them exactly 0
    Lambda: float = 0.2  # Λ: entropy-constraint strength, as a share of each layer's λ_max
    profile: str = "clean"  # clean | reference: the default of every switch below
    lambda_max_rule: str | None = None  # λ_max: thesis | reference (official code)
    pmf: str | None = None  # P_c with P_0 >= 0.5: exact | reference (official rescale loop)
    ste: str | None = None  # straight-through estimator: identity | centroid_signed | centroid_magnitude
    skip_first: bool = False  # keep the first Linear/Conv layer in FP32
    skip_last: bool = False  # keep the last Linear/Conv layer in FP32

    def __post_init__(self) -> None:
        resolve_profile(self)
        check_bits(self.bits)
        check_range("Lambda (Λ)", self.Lambda, 0.0, float("inf"))
        check_choice("lambda_max_rule", self.lambda_max_rule, LAMBDA_MAX_RULES)
        check_choice("pmf", self.pmf, PMF_RULES)
        check_choice("ste", self.ste, STE_RULES)


class EntropyConstrained(LatentMethod):
    """Entropy-constrained quantization (ECQ): the ECQ assignment of every layer after every step."""

    Config = ECQConfig
    setting_params = ("Lambda",)

    def make_grid(self, name: str, weight: Tensor) -> Grid:
        return make_grid(weight, self.config.bits)

    def relevance_of(self, name: str) -> Tensor | None:
        """The layer's relevance R in [0, 1] for the assignment (None: plain ECQ)."""
        return None

    def update_relevance(self, model: nn.Module, batch: tuple[Tensor, Tensor] | None) -> None:
        """Refresh relevances before the assignment (nothing to do for plain ECQ)."""

    def assignment_relevance(self, name: str) -> Tensor | RelevanceTerms | None:
        """What the assignment of layer ``name`` gets as relevance (default: ``relevance_of``)."""
        return self.relevance_of(name)

    def compress(self, model: nn.Module, batch) -> None:
        cfg = self.config
        self.update_relevance(model, batch)
        n_max = max(w.numel() for w in self.latent.values())
        for name, latent in self.latent.items():
            centroids = self.centroids[name]
            a = assign_layer(
                latent,
                centroids,
                cfg.Lambda,
                latent.numel() / n_max,
                self.assignment_relevance(name),
                getattr(cfg, "p", 0.0),
                getattr(cfg, "rho", 1.0),
                cfg.lambda_max_rule,
                pmf=cfg.pmf,
                band=getattr(cfg, "band", "clip"),
                index_dtype=torch.uint8 if centroids.numel() <= 256 else torch.int16,
            )
            self.indices[name] = self.compact(a.indices)
            self.layer_stats[name] = {"lambda": a.lam, "ecq_sparsity": a.ecq_sparsity, "beta": a.beta}


@METHODS.register("ecqx")
class ECQx(EntropyConstrained):
    """Explainability-driven quantization (Becking et al. 2022)."""

    @dataclass(frozen=True)
    class Config(ECQConfig):
        p: float = 0.1  # p: ECQx sparsity band [s_ECQ - p, s_ECQ] per layer
        rho: float = 2.0  # ρ: scale of the zero cluster's relevance factor ρ·R^β
        alpha: float = 0.1  # α: EMA weight of the previous relevance (R = α·R_prev + (1-α)·R_new)
        relevance: bool = True  # use LRP relevance (False gives plain ECQ)
        relevance_every: int = 1  # k: compute relevances every k steps, EMA in between
        composite: str = "epsilon_plus_flat"  # zennit composite for input relevances
        canonizer: str = "auto"  # none | sequential_bn | resnet | auto (model.lrp_canonizer)
        epsilon: float = 1e-6  # ε of the epsilon weight rule
        relevance_model: str | None = None  # LRP on: quantized (weights that saw the batch) | stepped
        relevance_ema_reset: str | None = None  # relevance EMA restarts: never | epoch
        band: str | None = None  # β search: clip (selection into the band) | reference (official search)
        relevance_start: str | None = None  # start relevance: logit | batch_mean (logit / batch size)
        relevance_chunk: int = 0  # LRP on sub-batches of this many examples, summed (0: the whole batch at once)

        def __post_init__(self) -> None:
            super().__post_init__()
            check_choice("relevance_model", self.relevance_model, RELEVANCE_MODELS)
            check_choice("relevance_ema_reset", self.relevance_ema_reset, RELEVANCE_RESETS)
            check_choice("band", self.band, BAND_RULES)
            check_choice("relevance_start", self.relevance_start, RELEVANCE_STARTS)
            check_range("p", self.p, 0.0, 1.0)
            check_range("rho (ρ)", self.rho, 0.0, float("inf"), low_open=True)
            check_range("alpha (α)", self.alpha, 0.0, 0.999999)
            check_int("relevance_every", self.relevance_every, 1)
            check_range("epsilon (ε)", self.epsilon, 0.0, float("inf"), low_open=True)
            check_int("relevance_chunk", self.relevance_chunk, 0)

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self.relevance: dict[str, Tensor] = {}
        self._lrp = None
        self._terms: dict[str, tuple[Tensor, int, RelevanceTerms | None]] = {}  # name: (EMA, its _version, terms)

    def relevance_engine(self, model: nn.Module):
        """The :class:`~ecqx.relevance.WeightRelevance` of this config for ``model`` (made once)."""
        if self._lrp is None:
            from ecqx.relevance import WeightRelevance  # zennit is imported only when relevance is on

            canonizer = self.config.canonizer
            if canonizer == "auto":
                canonizer = getattr(model, "lrp_canonizer", "none")
            cfg = self.config
            self._lrp = WeightRelevance(cfg.composite, canonizer, cfg.epsilon, cfg.relevance_start)
        return self._lrp

    def start_epoch(self, epoch: int) -> None:
        """``relevance_ema_reset=epoch``: the relevance EMA restarts with every epoch."""
        if self.config.relevance_ema_reset == "epoch":
            self.relevance.clear()

    def update_relevance(self, model: nn.Module, batch: tuple[Tensor, Tensor] | None) -> None:
        """Every ``relevance_every`` steps: LRP for ``batch`` on the quantized network that saw it
        (``relevance_model=quantized``) or on the weights the optimizer step just moved (``stepped``),
        EMA into ``self.relevance`` (R = α·R_prev + (1-α)·R_new). The model's parameter gradients are
        freed first (the step has used them; the LRP pass then peaks lower)."""
        cfg = self.config
        if not cfg.relevance or batch is None or (self.step - 1) % cfg.relevance_every != 0:
            return
        if cfg.relevance_model == "quantized":
            self.write_all()  # the compressed values of before the step
        for param in model.parameters():  # spent: the optimizer and the STE used them before this hook
            param.grad = None
        x, y = batch
        engine = self.relevance_engine(model)
        if cfg.relevance_chunk and cfg.relevance_chunk < len(x):  # bounded memory, another summation order
            for name, r in engine.chunked(model, x, y, self.layers, cfg.relevance_chunk).items():
                self.fold_relevance(name, r)
        else:  # each layer's relevance enters the EMA as soon as the backward pass has it (memory)
            engine(model, x, y, self.layers, fold=self.fold_relevance)

    def fold_relevance(self, name: str, fresh: Tensor) -> None:
        """R = α·R_prev + (1-α)·R_new for layer ``name`` (R_new alone the first time)."""
        prev = self.relevance.get(name)
        a = self.config.alpha
        self.relevance[name] = fresh if prev is None else prev.mul_(a).add_(fresh, alpha=1.0 - a)

    def relevance_of(self, name: str) -> Tensor | None:
        """|EMA relevance| / max, in [0, 1] (None without relevance, before the first LRP pass or if all zero)."""
        r = self.relevance.get(name) if self.config.relevance else None
        if r is None:
            return None
        r = r.abs()
        top = r.max()
        return r.div_(top) if top > 0 else None

    def assignment_relevance(self, name: str) -> Tensor | RelevanceTerms | None:
        """With ``relevance_every`` > 1: the layer's :class:`RelevanceTerms`, kept while its EMA tensor
        is unchanged (between LRP passes), so ln R is computed once per pass; else ``relevance_of``."""
        if self.config.relevance_every == 1:
            return self.relevance_of(name)
        r = self.relevance.get(name) if self.config.relevance else None
        if r is None:
            return None
        cached = self._terms.get(name)
        if cached is not None and cached[0] is r and cached[1] == r._version:  # in-place EMA bumps _version
            return cached[2]
        top = r.abs().max()
        terms = relevance_terms(r, self.latent[name].dtype, top) if top > 0 else None
        self._terms[name] = (r, r._version, terms)
        return terms

    def finalize(self, model: nn.Module):
        """As LatentMethod.finalize; also records each layer's share of the total |relevance|."""
        totals = {name: float(r.abs().sum()) for name, r in self.relevance.items()}
        grand = sum(totals.values())
        for name, stats in self.layer_stats.items():
            stats["relevance_share"] = totals.get(name, 0.0) / grand if grand > 0 else None
        return super().finalize(model)
