"""Straight-through estimators: how the optimizer's step on a compressed weight reaches its latent
FP32 copy.

The model's parameter holds the compressed value during forward and backward; each compressed
weight keeps a latent FP32 copy from which the compressed value is recomputed after every step.

identity   latent += (parameter after the optimizer step) - (compressed value before it): the
           gradient at the compressed point drives the latent copy, with any optimizer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from torch import Tensor, nn

Values = Callable[[str], Tensor]  # name -> the compressed values written before the step (float32)


class StraightThrough(ABC):
    """Updates latent copies from the optimizer's step on the compressed parameters."""

    name: str

    def attach(self, latent: dict[str, Tensor], layers: dict[str, nn.Module], optimizer=None) -> None:
        """Called once by ``prepare`` with the latent copies, their modules and the training optimizer."""
        self.latent, self.layers = latent, layers

    @abstractmethod
    def update(self, before: Values) -> None:
        """After the optimizer step: move every latent copy; ``before(name)`` gives the compressed
        values the gradient was computed at."""


class IdentitySTE(StraightThrough):
    """latent += w_after_step - w_before: the optimizer's own update, whatever the optimizer."""

    name = "identity"

    def update(self, before: Values) -> None:
        for name, module in self.layers.items():
            value = before(name)  # may depend on the latent copy: read it before changing it
            self.latent[name].add_(module.weight.detach().float()).sub_(value)


STE_RULES: dict[str, type[StraightThrough]] = {cls.name: cls for cls in (IdentitySTE,)}


def make_ste(name: str) -> StraightThrough:
    """The straight-through estimator called ``name`` (one of :data:`STE_RULES`)."""
    if name not in STE_RULES:
        raise ValueError(f"ste must be one of {', '.join(STE_RULES)}, got {name!r}")
    return STE_RULES[name]()
