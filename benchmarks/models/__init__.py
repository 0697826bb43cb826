"""Models: one registry of constructors.

A model is registered as ``@MODELS.register(name)`` on a function

    build(num_classes: int, input_shape: tuple[int, ...], **options) -> torch.nn.Module

Each model also declares its LRP canonizer family via a ``lrp_canonizer`` attribute on the returned
module (``"none"``, ``"sequential_bn"`` or ``"resnet"``), read by ``ecqx.relevance``.
"""

from benchmarks.models import paper, small  # noqa: F401  (each registers its constructors)
from benchmarks.models.registry import MODELS

__all__ = ["MODELS"]
