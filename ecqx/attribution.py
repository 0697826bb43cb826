"""Input-relevance maps (LRP heat maps over the input) from one zennit pass per batch.

The explained output of example n is its true class (class-index targets) or, for multi-label 0/1
targets, each positive class in turn: one map per (example, explained class) pair. The start
relevance of a pair is that class's logit (zero elsewhere), as in the ECQx relevance pass
(:func:`ecqx.relevance.start_relevance`). The composite and canonizer are chosen per model as that
pass chooses them, without the flat rule on the input layer (:func:`lrp_choice`).

A map has one value per input position: inputs of three or more dimensions (C, H, W ...) are summed
over their channel axis (an H x W heat map); one- and two-dimensional inputs keep every value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ecqx.ecqx_method import ECQx


@dataclass(frozen=True)
class LRPChoice:
    """The zennit set-up of a model's maps: composite name, canonizer name and ε."""

    composite: str
    canonizer: str
    epsilon: float


def input_composite(composite: str) -> str:
    """The composite of the input maps for the ECQx pass's ``composite``: the same rules with the
    input layer's flat rule dropped (``epsilon_plus_flat`` -> ``epsilon_plus``). The flat rule
    gives every input of a layer the same share of each neuron's relevance, whatever the input and
    the weights: behind a dense first layer every map would be constant. The ECQx pass does not
    use that layer's input relevance (its weight relevance takes the epsilon rule on the input)."""
    from zennit.composites import COMPOSITES

    base = composite.removesuffix("_flat")
    return base if base != composite and base in COMPOSITES else composite


def lrp_choice(model: nn.Module) -> LRPChoice:
    """The composite, canonizer and ε of ``model``'s input maps, as the ECQx relevance pass chooses
    them with its default config: ``ECQx.Config``'s composite (via :func:`input_composite`) and ε,
    canonizer ``auto`` = ``model.lrp_canonizer``."""
    cfg = ECQx.Config()
    canonizer = getattr(model, "lrp_canonizer", "none") if cfg.canonizer == "auto" else cfg.canonizer
    return LRPChoice(input_composite(cfg.composite), canonizer, cfg.epsilon)


def explained_pairs(target: Tensor) -> tuple[Tensor, Tensor]:
    """(example index, explained class) of every map: the true class per example (class-index
    targets of shape (N,)), or every positive class of 0/1 targets of shape (N, classes)."""
    if target.dim() == 2:
        rows, classes = torch.nonzero(target > 0, as_tuple=True)
        return rows, classes
    return torch.arange(target.numel()), target.reshape(-1).long()


def _positions(relevance: Tensor) -> Tensor:
    """(P, *input shape) -> (P, positions): channels summed for inputs of 3+ dimensions."""
    if relevance.dim() >= 4:
        relevance = relevance.sum(dim=1)
    return relevance.reshape(len(relevance), -1)


def input_relevance(
    model: nn.Module, x: Tensor, target: Tensor, choice: LRPChoice | None = None, batch_size: int = 64
) -> Tensor:
    """LRP input-relevance maps, float32 of shape (pairs, positions), one row per
    :func:`explained_pairs` entry (in that order). Runs ``model`` in eval mode; deterministic for the
    same weights and inputs on CPU. ``choice``: default :func:`lrp_choice` of ``model``."""
    from ecqx.relevance import make_composite

    choice = choice or lrp_choice(model)
    rows, classes = explained_pairs(target)
    was_training = model.training
    model.eval()
    maps = []
    try:
        for lo in range(0, len(rows), batch_size):
            r, c = rows[lo : lo + batch_size], classes[lo : lo + batch_size]
            with make_composite(choice.composite, choice.canonizer, choice.epsilon).context(model) as modified:
                xb = x[r].detach().clone().requires_grad_()
                logits = modified(xb)
                # start relevance: the explained class's logit, zero for every other output
                start = torch.zeros_like(logits).scatter_(1, c.reshape(-1, 1), 1.0) * logits.detach()
                (relevance,) = torch.autograd.grad(logits, xb, start)
            maps.append(_positions(relevance.detach().float()))
    finally:
        model.train(was_training)
    return torch.cat(maps) if maps else torch.zeros(0, 0)


@torch.no_grad()
def top1(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """The top-1 class per example (argmax of the outputs), shape (N,), in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[lo : lo + batch_size]).argmax(dim=1) for lo in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
