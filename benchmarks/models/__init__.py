"""Models: one registry of constructors.

A model is registered as ``@MODELS.register(name)`` on a function

    build(num_classes: int, input_shape: tuple[int, ...], **options) -> torch.nn.Module

Each model also declares its LRP canonizer family via a ``lrp_canonizer`` attribute on the returned
module (``"none"``, ``"sequential_bn"`` or ``"resnet"``), read by ``ecqx.relevance``.
"""

from __future__ import annotations

from ecqx.registry import Registry

MODELS: Registry = Registry("model")

from benchmarks.models import paper, small  # noqa: E402,F401  (registration)
