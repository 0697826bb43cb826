"""Straight-through training of compressed weights: latent FP32 copies, per-layer grids, write-back.

:class:`LatentMethod` is the base of every method that trains a compressed version of selected
weights (ECQx, ECQ, uniform QAT, magnitude pruning). After each optimizer step its straight-through
estimator (``ecqx.ste``) moves the latent copies, the subclass recomputes the compressed weights
(``compress``) and they are written back into the model.

A compressed weight is either quantized, with a per-layer :class:`~ecqx.codebook.Grid` (``grids``)
and a centroid index per weight (``indices``), or kept in float32 (e.g. pruned but unquantized
weights; then the subclass provides ``float_values``).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from ecqx.codebook import Grid
from ecqx.layers import select_layers
from ecqx.method import Method
from ecqx.quantized import QuantizedLayer, QuantizedModel
from ecqx.ste import make_ste


class LatentMethod(Method):
    """Latent FP32 copies + re-compression after every step; see the module docstring.

    Subclasses implement ``compress(model, batch)`` (fill ``self.indices`` for quantized layers) and
    may override ``make_grid(name, weight)`` (None: the layer stays float32; then ``float_values``).
    ``indices[name]`` holds the centroid index per weight (uint8/int16) into ``centroids[name]``.
    """

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.layers: dict[str, nn.Module] = {}
        self.latent: dict[str, Tensor] = {}
        self.grids: dict[str, Grid] = {}
        self.centroids: dict[str, Tensor] = {}
        self.indices: dict[str, Tensor] = {}
        self.step = 0
        self.total_steps = 0
        self.ste = make_ste(getattr(self.config, "ste", "identity"))

    # -- hooks -------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, total_steps: int = 0, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Select layers, keep latent FP32 copies, build grids and write the first compressed weights."""
        cfg = self.config
        self.layers = select_layers(model, cfg.skip_first, cfg.skip_last)
        self.total_steps = total_steps
        for name, module in self.layers.items():
            w = module.weight.detach()
            self.latent[name] = w.clone().float()
            grid = self.make_grid(name, w)
            if grid is not None:
                self.grids[name] = grid
                self.centroids[name] = grid.centroids(torch.float32, w.device)
        self.ste.attach(self.latent, self.layers, optimizer)
        self.compress(model, None)
        self.write_all()

    def after_step(self, model: nn.Module, batch: tuple[Tensor, Tensor] | None) -> None:
        """Move the latent copies (straight-through), re-compress and write back."""
        self.step += 1
        self.ste.update(self.current_values)
        self.compress(model, batch)
        self.write_all()

    def finalize(self, model: nn.Module) -> QuantizedModel:
        """Integer grid indices + step per quantized layer; everything else of the state dict as stored."""
        quantized = {}
        for name, grid in self.grids.items():
            levels = (self.indices[name].to(torch.int32) + grid.k_min).cpu()
            quantized[name] = QuantizedLayer(levels, grid.step, grid.bits)
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k not in quantized}
        return QuantizedModel(quantized, state, list(self.layers))

    # -- what subclasses provide ---------------------------------------------------------------
    def make_grid(self, name: str, weight: Tensor) -> Grid | None:
        """The layer's grid (None: the layer's compressed values stay float32)."""
        return None

    @abstractmethod
    def compress(self, model: nn.Module, batch: tuple[Tensor, Tensor] | None) -> None:
        """Recompute the compressed weights from the latent copies (``batch``: None in ``prepare``)."""

    def float_values(self, name: str) -> Tensor:  # pragma: no cover - only for layers without a grid
        raise NotImplementedError(f"{type(self).__name__} keeps {name} in float32 but has no float_values")

    # -- shared machinery --------------------------------------------------------------------
    def current_values(self, name: str, out: Tensor | None = None) -> Tensor:
        """The compressed values last written into layer ``name`` (float32, weight shape); ``out``: a
        flat float32 tensor of the layer's size to write them into (quantized layers)."""
        if name not in self.grids:
            return self.float_values(name)
        idx = self.indices[name]
        return torch.index_select(self.centroids[name], 0, idx.reshape(-1).int(), out=out).reshape(idx.shape)

    def write_all(self) -> None:
        """Write every layer's compressed values into the model's parameters."""
        with torch.no_grad():
            for name, module in self.layers.items():
                weight = module.weight
                if name in self.grids and weight.dtype == self.centroids[name].dtype and weight.is_contiguous():
                    self.current_values(name, out=weight.view(-1))  # straight into the parameter, no temporary
                else:
                    weight.copy_(self.current_values(name))

    @staticmethod
    def compact(indices: Tensor) -> Tensor:
        """Store centroid indices in the smallest integer type (uint8 for <= 256 levels)."""
        if indices.dtype == torch.uint8:
            return indices
        small = indices.numel() == 0 or int(indices.max()) < 256
        return indices.to(torch.uint8) if small else indices.to(torch.int16)
