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
from zennit.core import Hook, ParamMod, Stabilizer
from zennit.rules import Epsilon, ZPlus
from zennit.torchvision import ResNetCanonizer

CANONIZERS: dict[str, Callable[[], list]] = {
    "none": lambda: [],
    "sequential_bn": lambda: [SequentialMergeBatchNorm()],
    "resnet": lambda: [ResNetCanonizer()],
}


def composite_names() -> list[str]:
    """Names accepted for ``composite`` (zennit's registered composites)."""
    return sorted(COMPOSITES)


def make_composite(composite: str, canonizer: str, epsilon: float):
    """A fresh zennit composite ``composite`` with the canonizers of ``canonizer`` (see
    :data:`CANONIZERS`) and ε (and stabilizer) ``epsilon`` where the composite takes them."""
    if composite not in COMPOSITES:
        raise ValueError(f"unknown LRP composite {composite!r}; known: {', '.join(composite_names())}")
    if canonizer not in CANONIZERS:
        raise ValueError(f"unknown LRP canonizer {canonizer!r}; known: {', '.join(CANONIZERS)}")
    cls = COMPOSITES[composite]
    accepted = inspect.signature(cls).parameters
    kwargs = {k: epsilon for k in ("epsilon", "stabilizer") if k in accepted}
    return cls(canonizers=CANONIZERS[canonizer](), **kwargs)


def stabilized(z: Tensor, epsilon: float) -> Tensor:
    """z + ε·sign(z), with +ε at z = 0 (and -0): zennit's ``stabilize`` (clip and norm_scale off),
    the same numbers from three passes over z instead of six."""
    e = torch.tensor(epsilon, dtype=z.dtype, device=z.device)
    return z + torch.where(z >= 0, e, -e)  # z + (-ε) is z - ε exactly; NaN stays NaN


def _plain_stabilizer(rule: Hook) -> float | None:
    """ε of a rule whose gradient mapper divides by zennit's plain ``Stabilizer(ε)`` (ZPlus with a
    float stabilizer), else None (then the rule's own mapper runs)."""
    for cell in getattr(rule.gradient_mapper, "__closure__", None) or ():
        fn = cell.cell_contents
        if type(fn) is Stabilizer and not fn.clip and not fn.norm_scale:
            return fn.epsilon
    return None


def _forward_with_weight(module: nn.Module, a: Tensor, weight: Tensor) -> Tensor:
    if isinstance(module, nn.Linear):
        return F.linear(a, weight, module.bias)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return module._conv_forward(a, weight, module.bias)
    raise TypeError(f"weight relevance supports Linear and Conv layers, not {type(module).__name__}")


def _weight_gradient(module: nn.Module, a: Tensor, grad_out: Tensor) -> Tensor | None:
    """∂<z, grad_out>/∂w of a Linear or zero-padded Conv layer without re-running its forward
    (None for other layers: padding modes, string padding)."""
    w = module.weight
    if isinstance(module, nn.Linear):
        return grad_out.reshape(-1, w.shape[0]).t().mm(a.reshape(-1, w.shape[1]))
    conv = isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
    if not conv or module.padding_mode != "zeros" or isinstance(module.padding, str) or module.transposed:
        return None
    return torch.ops.aten.convolution_backward(
        grad_out,
        a,
        w.detach(),
        None,
        module.stride,
        module.padding,
        module.dilation,
        False,
        [0] * len(module.stride),
        module.groups,
        (False, True, False),
    )[1]


def epsilon_weight_relevance(
    module: nn.Module, a: Tensor, r_out: Tensor, epsilon: float, z: Tensor | None = None
) -> Tensor:
    """R_w = w ⊙ ∂z/∂w · R_out/(z + ε·sign z), summed over batch and positions; weight shape.

    z: the layer's output for input ``a`` when known (saves re-running the layer's forward).
    """
    w = module.weight.detach()
    if z is not None:
        grad = _weight_gradient(module, a.detach(), r_out / stabilized(z.detach(), epsilon))
        if grad is not None:
            return w * grad
    with torch.enable_grad():
        w = module.weight.detach().requires_grad_()
        z = _forward_with_weight(module, a.detach(), w)
        scaled = r_out / stabilized(z.detach(), epsilon)
        (grad,) = torch.autograd.grad(z, w, scaled)
    return w.detach() * grad


def _zplus_nonnegative_input(rule: ZPlus, module: nn.Module, grad_input, grad_output):
    """zennit's ZPlus backward for an input without negative entries (e.g. after a ReLU).

    ZPlus sums a positive part (x+ with W+, b+) and a negative part (x- with W-); for x >= 0 the
    negative part's input x- is all zeros, so it adds exact zeros to the normaliser and to the
    relevance. This computes the positive part alone: the same numbers for half the work.
    """
    original_input = rule.stored_tensors["input"][0].clone()
    in_mod, param_mod, out_mod = rule.input_modifiers[0], rule.param_modifiers[0], rule.output_modifiers[0]
    x = in_mod(original_input).requires_grad_()
    with ParamMod.ensure(param_mod)(module) as modified, torch.enable_grad():
        output = out_mod(modified.forward(x))
    eps = _plain_stabilizer(rule)
    if eps is None:
        grad_out = rule.gradient_mapper(grad_output[0], [output])[0]
    else:  # the mapper's out_grad / stabilize(0 + z): 0 + z only turns -0 into +0, where both give +ε
        grad_out = grad_output[0] / stabilized(output, eps)
    (gradient,) = torch.autograd.grad([output], [x], grad_outputs=[grad_out], create_graph=grad_output[0].requires_grad)
    relevance = x * gradient
    return tuple(relevance if original.shape == relevance.shape else None for original in grad_input)


class _Detour(torch.autograd.Function):
    """The layer's output, with a backward that skips the layer: its input gradient would be
    replaced by the rule's relevance anyway, so a zero of the right shape stands in for it."""

    @staticmethod
    def forward(ctx, x: Tensor, output: Tensor) -> Tensor:
        ctx.x_meta = (x.shape, x.dtype, x.device)
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad: Tensor):
        shape, dtype, device = ctx.x_meta
        return torch.zeros((), dtype=dtype, device=device).expand(shape), None


class _WeightRelevanceHook(Hook):
    """Delegates input relevance to ``inner`` and sends the layer's weight relevance to ``sink``."""

    def __init__(self, inner: Hook, sink: Callable[[nn.Module, Tensor], None], epsilon: float) -> None:
        super().__init__()
        self.inner, self.sink, self.epsilon = inner, sink, epsilon

    def copy(self) -> _WeightRelevanceHook:
        return _WeightRelevanceHook(self.inner.copy(), self.sink, self.epsilon)

    def register(self, module):
        handles = super().register(module)
        handles.append(module.register_forward_hook(self._detour, prepend=True))
        return handles

    def _detour(self, module, input, output):
        """Runs before zennit's hooks: the output they see bypasses the layer's own backward."""
        if self.active and isinstance(output, Tensor) and input[0].requires_grad:
            return _Detour.apply(input[0], output.detach())
        return None

    def forward(self, module, input, output):
        self.inner.forward(module, input, output)
        self.stored_tensors["input"] = input
        self.stored_tensors["output"] = output  # z (usually kept alive anyway, e.g. by BatchNorm)

    def backward(self, module, grad_input, grad_output):
        a = self.stored_tensors["input"][0]
        z = self.stored_tensors.pop("output", None)
        self.sink(module, epsilon_weight_relevance(module, a, grad_output[0], self.epsilon, z))
        if type(self.inner) is ZPlus and not bool((a < 0).any()):
            return _zplus_nonnegative_input(self.inner, module, grad_input, grad_output)
        return self.inner.backward(module, grad_input, grad_output)

    def remove(self):
        self.inner.remove()
        super().remove()


def start_relevance(logits: Tensor, target: Tensor, start: str = "logit") -> Tensor:
    """Output relevance: the true-class logit (class index targets) or the positive classes'
    logits (0/1 multi-label targets of shape (batch, classes)); zero elsewhere. ``batch_mean``
    divides it by the batch size (the official code's start relevance)."""
    if target.dim() == logits.dim() and target.shape == logits.shape:
        out = logits * (target > 0).to(logits.dtype)
    else:
        out = logits * torch.zeros_like(logits).scatter_(1, target.reshape(-1, 1).long(), 1.0)
    return out / logits.shape[0] if start == "batch_mean" else out


class WeightRelevance:
    """Computes per-weight relevances of selected layers for one batch.

    composite: a zennit composite name (default ``epsilon_plus_flat``);
    canonizer: ``none``, ``sequential_bn`` or ``resnet`` (see :data:`CANONIZERS`);
    epsilon: ε of the weight rule (and of the composite's epsilon rule);
    start: ``logit`` or ``batch_mean`` (see :func:`start_relevance`).
    """

    def __init__(
        self, composite: str = "epsilon_plus_flat", canonizer: str = "none", epsilon: float = 1e-6, start: str = "logit"
    ):
        if composite not in COMPOSITES:
            raise ValueError(f"unknown LRP composite {composite!r}; known: {', '.join(composite_names())}")
        if canonizer not in CANONIZERS:
            raise ValueError(f"unknown LRP canonizer {canonizer!r}; known: {', '.join(CANONIZERS)}")
        self.composite_name, self.canonizer, self.epsilon, self.start = composite, canonizer, epsilon, start

    def _composite(self, targets: dict[nn.Module, str], sink):
        composite = make_composite(self.composite_name, self.canonizer, self.epsilon)
        inner_map = composite.module_map

        def module_map(ctx, name, module):
            template = inner_map(ctx, name, module)
            if module not in targets:
                return template
            return _WeightRelevanceHook(template or Epsilon(epsilon=self.epsilon), sink, self.epsilon)

        composite.module_map = module_map
        return composite

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        target: Tensor,
        layers: dict[str, nn.Module],
        fold: Callable[[str, Tensor], None] | None = None,
    ) -> dict[str, Tensor]:
        """Weight relevances {name: tensor of the layer's weight shape} for batch (x, target).

        Runs the model in eval mode (BatchNorm running statistics); parameter gradients are untouched.
        fold: if given, each layer's relevance goes to ``fold(name, relevance)`` as soon as its last
        contribution has arrived in the backward pass (a layer the forward ran k times: after k) and is
        not kept, so the relevances of all layers never exist at once (memory); the same numbers;
        then the returned dict is empty.
        """
        targets = {module: name for name, module in layers.items()}
        done: dict[str, Tensor] = {}
        deliver = fold if fold is not None else done.__setitem__
        pending: dict[str, Tensor] = {}  # partial sums of layers with contributions still to come
        calls = dict.fromkeys(targets, 0)  # forward calls per target layer: contributions to expect
        arrived = dict.fromkeys(targets, 0)

        def count(module: nn.Module, input, output) -> None:
            calls[module] += 1

        def sink(module: nn.Module, relevance: Tensor) -> None:
            name = targets[module]
            total = pending.pop(name) + relevance if name in pending else relevance
            arrived[module] += 1
            if arrived[module] == calls[module]:
                deliver(name, total)
            else:
                pending[name] = total

        was_training = model.training
        model.eval()
        handles = [module.register_forward_hook(count) for module in targets]
        try:
            with self._composite(targets, sink).context(model) as modified:
                x = x.detach().requires_grad_()
                logits = modified(x)
                torch.autograd.grad(logits, x, start_relevance(logits.detach(), target, self.start))
        finally:
            model.train(was_training)
            for handle in handles:
                handle.remove()
        for module, name in targets.items():  # layers not delivered in the pass: no (or not all) relevance arrived
            if not calls[module] or arrived[module] < calls[module]:
                deliver(name, pending.pop(name) if name in pending else torch.zeros_like(module.weight))
        return {name: done[name] for name in layers} if fold is None else {}

    def chunked(
        self, model: nn.Module, x: Tensor, target: Tensor, layers: dict[str, nn.Module], chunk: int
    ) -> dict[str, Tensor]:
        """As calling it, on sub-batches of ``chunk`` examples, summed: the activations of one
        sub-batch at a time (memory), the same relevances up to the order of summation over the batch
        (``start=batch_mean`` divides by the whole batch's size, as unchunked)."""
        total: dict[str, Tensor] = {}
        for xs, ys in zip(x.split(chunk), target.split(chunk)):
            share = len(xs) / len(x)  # batch_mean: this sub-batch's share of the whole batch

            def add(name: str, r: Tensor, share: float = share) -> None:  # each layer as it arrives (memory)
                if self.start == "batch_mean":
                    r = r.mul_(share)
                total[name] = total[name].add_(r) if name in total else r

            self(model, xs, ys, layers, fold=add)
        return total
