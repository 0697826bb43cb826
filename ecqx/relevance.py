"""Per-weight LRP relevances from one zennit backward pass (no model copies).

zennit 0.5.1 propagates relevance to the inputs only. Each target Linear/Conv layer gets a thin
wrapper around the composite's rule that, in the same backward pass, also computes the epsilon-rule
weight relevance

    R_w[j, i] = Σ_batch(, positions) w_ji · a_i · R_j / (z_j + ε·sign(z_j))

from the layer's stored input a and the relevance R reaching its output (signed). The start
relevance is the true-class logit per sample (multi-label: the positive classes' logits).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import COMPOSITES
from zennit.core import Hook, stabilize
from zennit.rules import Epsilon
from zennit.torchvision import ResNetCanonizer

CANONIZERS: dict[str, Callable[[], list]] = {
    "none": lambda: [],
    "sequential_bn": lambda: [SequentialMergeBatchNorm()],
    "resnet": lambda: [ResNetCanonizer()],
}


def composite_names() -> list[str]:
    """Names accepted for ``composite`` (zennit's registered composites)."""
    return sorted(COMPOSITES)


def _forward_with_weight(module: nn.Module, a: Tensor, weight: Tensor) -> Tensor:
    if isinstance(module, nn.Linear):
        return F.linear(a, weight, module.bias)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return module._conv_forward(a, weight, module.bias)
    raise TypeError(f"weight relevance supports Linear and Conv layers, not {type(module).__name__}")


def epsilon_weight_relevance(module: nn.Module, a: Tensor, r_out: Tensor, epsilon: float) -> Tensor:
    """R_w = w ⊙ ∂z/∂w · R_out/(z + ε·sign z), summed over batch and positions; weight shape."""
    with torch.enable_grad():
        w = module.weight.detach().requires_grad_()
        z = _forward_with_weight(module, a.detach(), w)
        scaled = r_out / stabilize(z.detach(), epsilon)
        (grad,) = torch.autograd.grad(z, w, scaled)
    return w.detach() * grad


class _WeightRelevanceHook(Hook):
    """Delegates input relevance to ``inner`` and sends the layer's weight relevance to ``sink``."""

    def __init__(self, inner: Hook, sink: Callable[[nn.Module, Tensor], None], epsilon: float) -> None:
        super().__init__()
        self.inner, self.sink, self.epsilon = inner, sink, epsilon

    def copy(self) -> _WeightRelevanceHook:
        return _WeightRelevanceHook(self.inner.copy(), self.sink, self.epsilon)

    def forward(self, module, input, output):
        self.inner.forward(module, input, output)
        self.stored_tensors["input"] = input

    def backward(self, module, grad_input, grad_output):
        a = self.stored_tensors["input"][0]
        self.sink(module, epsilon_weight_relevance(module, a, grad_output[0], self.epsilon))
        return self.inner.backward(module, grad_input, grad_output)

    def remove(self):
        self.inner.remove()
        super().remove()


def start_relevance(logits: Tensor, target: Tensor) -> Tensor:
    """Output relevance: the true-class logit (class index targets) or the positive classes'
    logits (0/1 multi-label targets of shape (batch, classes)); zero elsewhere."""
    if target.dim() == logits.dim() and target.shape == logits.shape:
        return logits * (target > 0).to(logits.dtype)
    mask = torch.zeros_like(logits).scatter_(1, target.reshape(-1, 1).long(), 1.0)
    return logits * mask


class WeightRelevance:
    """Computes per-weight relevances of selected layers for one batch.

    composite: a zennit composite name (default ``epsilon_plus_flat``);
    canonizer: ``none``, ``sequential_bn`` or ``resnet`` (see :data:`CANONIZERS`);
    epsilon: ε of the weight rule (and of the composite's epsilon rule).
    """

    def __init__(self, composite: str = "epsilon_plus_flat", canonizer: str = "none", epsilon: float = 1e-6):
        if composite not in COMPOSITES:
            raise ValueError(f"unknown LRP composite {composite!r}; known: {', '.join(composite_names())}")
        if canonizer not in CANONIZERS:
            raise ValueError(f"unknown LRP canonizer {canonizer!r}; known: {', '.join(CANONIZERS)}")
        self.composite_name, self.canonizer, self.epsilon = composite, canonizer, epsilon

    def _composite(self, targets: dict[nn.Module, str], sink):
        cls = COMPOSITES[self.composite_name]
        accepted = inspect.signature(cls).parameters
        kwargs = {k: self.epsilon for k in ("epsilon", "stabilizer") if k in accepted}
        composite = cls(canonizers=CANONIZERS[self.canonizer](), **kwargs)
        inner_map = composite.module_map

        def module_map(ctx, name, module):
            template = inner_map(ctx, name, module)
            if module not in targets:
                return template
            return _WeightRelevanceHook(template or Epsilon(epsilon=self.epsilon), sink, self.epsilon)

        composite.module_map = module_map
        return composite

    def __call__(self, model: nn.Module, x: Tensor, target: Tensor, layers: dict[str, nn.Module]) -> dict[str, Tensor]:
        """Weight relevances {name: tensor of the layer's weight shape} for batch (x, target).

        Runs the model in eval mode (BatchNorm running statistics); parameter gradients are untouched.
        """
        targets = {module: name for name, module in layers.items()}
        found: dict[str, Tensor] = {}

        def sink(module: nn.Module, relevance: Tensor) -> None:
            name = targets[module]
            found[name] = found[name] + relevance if name in found else relevance

        was_training = model.training
        model.eval()
        try:
            with self._composite(targets, sink).context(model) as modified:
                x = x.detach().requires_grad_()
                logits = modified(x)
                torch.autograd.grad(logits, x, start_relevance(logits.detach(), target))
        finally:
            model.train(was_training)
        return {name: found.get(name, torch.zeros_like(layers[name].weight)) for name in layers}
