"""Small models for the embedded digits suite and for tests (same registry as the paper's models)."""

from __future__ import annotations

from torch import nn

from benchmarks.models.paper import mlp as paper_mlp
from benchmarks.models.registry import MODELS


@MODELS.register("mlp")
def mlp(num_classes: int, input_shape: tuple[int, ...], hidden: tuple[int, ...] | list[int] = (128, 64)) -> nn.Module:
    """Flatten -> [Linear -> ReLU] x len(hidden) -> Linear. No BatchNorm (plain LRP, no canonizer)."""
    return paper_mlp(num_classes, input_shape, hidden=tuple(hidden), batch_norm=False)


@MODELS.register("mlp_bn")
def mlp_bn(
    num_classes: int, input_shape: tuple[int, ...], hidden: tuple[int, ...] | list[int] = (256, 256)
) -> nn.Module:
    """[Flatten ->] [Linear -> BatchNorm1d -> ReLU] x len(hidden) -> Linear: the official ECQx code's
    digits MLP (64-256-256-10 on flat inputs: layers 0, 3 and 6). Default PyTorch initialisation.
    LRP passes its BatchNorm layers unmerged (canonizer ``none``; zennit's composites give BatchNorm
    the pass rule), as the official code's relevances do."""
    model = paper_mlp(num_classes, input_shape, hidden=tuple(hidden), batch_norm=True)
    model.lrp_canonizer = "none"
    return model


@MODELS.register("small_cnn")
def small_cnn(
    num_classes: int, input_shape: tuple[int, ...], channels: tuple[int, int] | list[int] = (16, 32)
) -> nn.Module:
    """Two [Conv3x3 -> BatchNorm -> ReLU] blocks (the second with 2x2 max-pooling) and a Linear head."""
    c_in, h, w = input_shape
    c1, c2 = channels
    model = nn.Sequential(
        nn.Conv2d(c_in, c1, 3, padding=1),
        nn.BatchNorm2d(c1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.BatchNorm2d(c2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * (h // 2) * (w // 2), num_classes),
    )
    model.lrp_canonizer = "sequential_bn"
    return model
