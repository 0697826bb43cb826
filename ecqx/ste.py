"""Straight-through estimators: how the optimizer's step on a compressed weight reaches its latent
FP32 copy.

The model's parameter holds the compressed value during forward and backward; each compressed
weight keeps a latent FP32 copy from which the compressed value is recomputed after every step.

identity             latent += (parameter after the optimizer step) - (compressed value before it):
                     the gradient at the compressed point drives the latent copy, with any optimizer.
centroid_signed      the official ECQx code's estimator: a second optimizer of the training
                     optimizer's kind and settings (its own moments) steps the latent copies with the
                     gradient times the centroid c a weight sits at (c != 0; signed, so the direction
                     flips for negative centroids), or the gradient itself at zero.
centroid_magnitude   the same with |c| (the direction is kept).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
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


class CentroidSTE(StraightThrough):
    """A second optimizer over the latent copies, gradient = ∂L/∂w · c (``signed``) or · |c| at a
    weight's non-zero centroid c, ∂L/∂w at zero; learning rates follow the training optimizer's."""

    name = "centroid_signed"
    signed = True

    def attach(self, latent: dict[str, Tensor], layers: dict[str, nn.Module], optimizer=None) -> None:
        super().attach(latent, layers, optimizer)
        if optimizer is None:
            raise ValueError(f"ste={self.name} needs the training optimizer: prepare(model, steps, optimizer)")
        group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        self.followed = [group_of[id(m.weight)] for m in layers.values()]  # the weight's group in the optimizer
        groups = [
            {**{k: v for k, v in g.items() if k != "params"}, "params": [latent[name]]}
            for name, g in zip(layers, self.followed)
        ]
        self.optimizer = type(optimizer)(groups)

    def update(self, before: Values) -> None:
        for (name, module), group, followed in zip(self.layers.items(), self.optimizer.param_groups, self.followed):
            grad = module.weight.grad
            c = before(name)  # the centroid values the gradient was computed at
            scale = torch.where(c != 0, c if self.signed else c.abs(), torch.ones_like(c))
            self.latent[name].grad = None if grad is None else grad.detach().float() * scale
            group["lr"] = followed["lr"]  # follow the training schedule
        self.optimizer.step()


class CentroidMagnitudeSTE(CentroidSTE):
    """As :class:`CentroidSTE` with |c|: the gradient's direction is kept."""

    name = "centroid_magnitude"
    signed = False


STE_RULES: dict[str, type[StraightThrough]] = {
    cls.name: cls for cls in (IdentitySTE, CentroidSTE, CentroidMagnitudeSTE)
}


def make_ste(name: str) -> StraightThrough:
    """The straight-through estimator called ``name`` (one of :data:`STE_RULES`)."""
    if name not in STE_RULES:
        raise ValueError(f"ste must be one of {', '.join(STE_RULES)}, got {name!r}")
    return STE_RULES[name]()
