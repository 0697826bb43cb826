"""The one method interface shared by ECQx and every baseline, and the grid-quantizer base class.

A method is a class with a nested frozen ``Config`` dataclass and three hooks:

    prepare(model, total_steps)       once, before training
    after_step(model, batch)          after every optimizer step
    finalize(model) -> QuantizedModel once, after training
    selectable -> bool                whether the current state may be chosen by model selection

Straight-through training: each compressed weight keeps a latent FP32 copy. The model's parameter
holds the compressed value during forward/backward; after the optimizer step, the change the
optimizer made to the parameter is added to the latent copy (identity STE, any optimizer), the layer
is re-compressed from the latent copy and the result written back into the parameter.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ecqx.codebook import Grid
from ecqx.layers import select_layers
from ecqx.quantized import QuantizedLayer, QuantizedModel
from ecqx.registry import Registry

METHODS: Registry = Registry("method", entry_point_group="ecqx.methods")


def build_config(config_cls: type, values: dict[str, Any] | None) -> Any:
    """``config_cls(**values)``; unknown keys raise ValueError naming them and the allowed keys."""
    values = dict(values or {})
    allowed = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)} for {config_cls.__qualname__}; allowed: {', '.join(allowed)}"
        )
    return config_cls(**values)


class GridMethod:
    """Base for methods that write values of a per-layer grid: latent copies + re-assignment.

    Subclasses set ``Config`` and implement ``make_grid(name, weight) -> Grid`` and
    ``assign_all(model, batch) -> None`` (filling ``self.indices``); ``indices[name]`` holds the
    centroid index per weight (uint8/int16) into ``self.grids[name].centroids()``.
    """

    Config: ClassVar[type]

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()
        self.layers: dict[str, nn.Module] = {}
        self.latent: dict[str, Tensor] = {}
        self.grids: dict[str, Grid] = {}
        self.centroids: dict[str, Tensor] = {}
        self.indices: dict[str, Tensor] = {}
        self.step = 0
        self.total_steps = 0

    # -- hooks -------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, total_steps: int = 0) -> None:
        """Select layers, build grids, keep latent FP32 copies and write the first assignment."""
        cfg = self.config
        self.layers = select_layers(model, cfg.skip_first, cfg.skip_last)
        self.total_steps = total_steps
        for name, module in self.layers.items():
            w = module.weight.detach()
            self.latent[name] = w.clone().float()
            self.grids[name] = self.make_grid(name, w)
            self.centroids[name] = self.grids[name].centroids(torch.float32, w.device)
        self.assign_all(model, None)
        self.write_all()

    def after_step(self, model: nn.Module, batch: tuple[Tensor, Tensor] | None) -> None:
        """Absorb the optimizer's update into the latent copies, re-assign and write back."""
        self.step += 1
        self.absorb_updates()
        self.assign_all(model, batch)
        self.write_all()

    def finalize(self, model: nn.Module) -> QuantizedModel:
        """Integer grid indices + step per layer; everything else of the state dict as stored."""
        quantized = {}
        for name in self.layers:
            grid = self.grids[name]
            levels = (self.indices[name].to(torch.int32) + grid.k_min).cpu()
            quantized[name] = QuantizedLayer(levels, grid.step, grid.bits)
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k not in quantized}
        return QuantizedModel(quantized, state, list(self.layers))

    @property
    def selectable(self) -> bool:
        """Whether the current compressed model is a valid final result (model selection may pick it)."""
        return True

    # -- shared machinery --------------------------------------------------------------------
    def current_values(self, name: str) -> Tensor:
        """The compressed values last written into layer ``name`` (float32, weight shape)."""
        idx = self.indices[name]
        return self.centroids[name].index_select(0, idx.reshape(-1).int()).reshape(idx.shape)

    def absorb_updates(self) -> None:
        """latent += (parameter after the step) - (compressed value before the step)."""
        for name, module in self.layers.items():
            before = self.current_values(name)  # may depend on the latent copy: read it first
            self.latent[name].add_(module.weight.detach().float()).sub_(before)

    def write_all(self) -> None:
        with torch.no_grad():
            for name, module in self.layers.items():
                module.weight.copy_(self.current_values(name))

    @staticmethod
    def compact(indices: Tensor) -> Tensor:
        """Store centroid indices in the smallest integer type (uint8 for <= 256 levels)."""
        if indices.dtype == torch.uint8:
            return indices
        small = indices.numel() == 0 or int(indices.max()) < 256
        return indices.to(torch.uint8) if small else indices.to(torch.int16)

    def make_grid(self, name: str, weight: Tensor) -> Grid:  # pragma: no cover - abstract
        raise NotImplementedError

    def assign_all(self, model: nn.Module, batch) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
