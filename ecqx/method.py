"""The one method interface shared by ECQx and every baseline, and the registry of methods.

A method is a class with a nested, frozen ``Config`` dataclass (every field's comment names the
paper symbol it stands for; the defaults there are the only defaults) and these hooks:

    prepare(model, total_steps, optimizer)  once, before training
    start_epoch(epoch)                      before every epoch (optional)
    after_step(model, batch)                after every optimizer step
    finalize(model) -> QuantizedModel       once, after training
    selectable -> bool                      whether the current state may be chosen by model selection

The training loop never branches on a method's name. Built-in methods register themselves when
their module is imported (``ecqx.ecqx_method``; ``baselines`` for the comparison methods); the
``ecqx.methods`` entry-point group lets installed third-party packages add theirs.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from ecqx.quantized import QuantizedModel
from ecqx.registry import Registry

METHODS: Registry = Registry("method", entry_point_group="ecqx.methods")
FP32_BITS = 32  # the bit width reported for weights a method leaves in float32


def check_keys(config_cls: type, keys) -> None:
    """Raise ValueError naming the keys that are not fields of ``config_cls`` and the allowed ones."""
    allowed = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)} for {config_cls.__qualname__}; allowed: {', '.join(allowed)}"
        )


def build_config(config_cls: type, values: dict[str, Any] | None) -> Any:
    """``config_cls(**values)``; unknown keys raise ValueError naming them and the allowed keys."""
    values = dict(values or {})
    check_keys(config_cls, values)
    return config_cls(**values)


def bit_width(config: Any) -> int:
    """The bit width b a method config stores its weights with (32 when it keeps them in float32)."""
    bits = getattr(config, "bits", None)
    return FP32_BITS if bits is None else int(bits)


class Method(ABC):
    """Base class of every compression method; see the module docstring for the hooks' contract.

    config: an instance of the subclass's ``Config``;
    layer_stats: per compressed weight name, numbers a method reports per layer (e.g. λ, β).
    """

    Config: ClassVar[type]
    setting_params: ClassVar[tuple[str, ...]] = ()  # Config fields that label a setting in tables (grid variable)

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()
        self.layer_stats: dict[str, dict[str, float | None]] = {}

    @abstractmethod
    def prepare(self, model: nn.Module, total_steps: int = 0, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Once before training: choose the layers and write the first compressed weights.
        ``total_steps``: optimizer steps the training will take; ``optimizer``: the training optimizer
        (methods whose straight-through estimator keeps its own optimizer copy its settings)."""

    def start_epoch(self, epoch: int) -> None:  # noqa: B027  (an optional hook: nothing by default)
        """Called by the training loop before each epoch (1-based); nothing by default."""

    @abstractmethod
    def after_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """After every optimizer step: update the latent state and write the compressed weights."""

    @abstractmethod
    def finalize(self, model: nn.Module) -> QuantizedModel:
        """After training: the compressed model (integer indices per quantized layer, the rest as stored)."""

    @property
    def selectable(self) -> bool:
        """Whether the current compressed model is a valid final result (model selection may pick it)."""
        return True

    @property
    def bits(self) -> int:
        """The bit width b of the compressed weights (32 for float32 survivors)."""
        return bit_width(self.config)
