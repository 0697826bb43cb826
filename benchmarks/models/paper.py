"""The ECQx paper's models (Becking et al. 2022): MLP_GSC, VGG16 and ResNet20 for CIFAR-10,
ResNet18 for PASCAL VOC, plus tiny variants built by the same code for tests and smoke runs.

Every constructor is ``build(num_classes, input_shape, **options) -> nn.Module`` and sets
``model.lrp_canonizer``: "sequential_bn" (BatchNorm right after each Linear/Conv, merged by
zennit's SequentialMergeBatchNorm) or "resnet" (torchvision ``BasicBlock`` residual blocks,
which zennit's ResNetCanonizer recognises, plus BN merging).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock

from benchmarks.models.registry import MODELS

MLP_GSC_HIDDEN = (512, 512, 256, 256)
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class PretrainedWeightsError(ValueError):
    """A pretrained-checkpoint path that is missing or does not fit the model."""


def _check_shape(name: str, input_shape: Sequence[int], ndim: int) -> tuple[int, ...]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != ndim or min(shape) < 1:
        raise ValueError(f"{name}: input_shape must have {ndim} positive dims, got {shape}")
    return shape


# ---------------------------------------------------------------------------------- MLP ----


def mlp(
    num_classes: int, input_shape: Sequence[int], *, hidden: Sequence[int] = MLP_GSC_HIDDEN, batch_norm: bool = True
) -> nn.Module:
    """[Flatten,] then (Linear -> [BatchNorm1d ->] ReLU) per hidden width, then Linear to the classes.
    Flatten comes first only for inputs of more than one dimension.

    Input (B, *input_shape) -> logits (B, num_classes).
    """
    layers: list[nn.Module] = [nn.Flatten()] if len(input_shape) > 1 else []
    width = math.prod(input_shape)
    for out in hidden:
        layers += [nn.Linear(width, out), *([nn.BatchNorm1d(out)] if batch_norm else []), nn.ReLU()]
        width = out
    layers.append(nn.Linear(width, num_classes))
    model = nn.Sequential(*layers)
    model.lrp_canonizer = "sequential_bn" if batch_norm else "none"
    return model


@MODELS.register("mlp_gsc")
def mlp_gsc(num_classes: int, input_shape: Sequence[int], *, hidden: Sequence[int] = MLP_GSC_HIDDEN) -> nn.Module:
    """MLP_GSC of the ECQx and FantastIC4 papers: 490 MFCC inputs, 512-512-256-256 hidden units
    with BatchNorm + ReLU, 12 classes (about 0.72 M parameters)."""
    return mlp(num_classes, input_shape, hidden=tuple(hidden))


@MODELS.register("mlp_gsc_tiny")
def mlp_gsc_tiny(num_classes: int, input_shape: Sequence[int], *, hidden: Sequence[int] = (32, 16)) -> nn.Module:
    """MLP_GSC's code with two small hidden layers (tests, smoke runs)."""
    return mlp(num_classes, input_shape, hidden=tuple(hidden))


# ---------------------------------------------------------------------------------- VGG ----


class VGG(nn.Module):
    """VGG16-BN for small images: 13 conv3x3 -> BN -> ReLU layers, 5 max-pools (/32), then
    Linear(C * H/32 * W/32 -> 512 * width_mult) -> BN -> ReLU -> Linear(-> num_classes).

    Input (B, 3, H, W) with H, W divisible by 32 -> logits (B, num_classes).
    """

    def __init__(self, num_classes: int, input_shape: Sequence[int], width_mult: float = 1.0) -> None:
        super().__init__()
        channels, height, width = _check_shape("vgg", input_shape, 3)
        if height % 32 or width % 32:
            raise ValueError(f"vgg: input height/width must be multiples of 32, got {height}x{width}")
        layers: list[nn.Module] = []
        for entry in VGG16_CONFIG:
            if entry == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = max(1, round(entry * width_mult))
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        hidden = max(1, round(512 * width_mult))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * (height // 32) * (width // 32), hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        _init_weights(self)
        self.lrp_canonizer = "sequential_bn"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("vgg16_cifar")
def vgg16_cifar(num_classes: int, input_shape: Sequence[int], *, width_mult: float = 1.0) -> nn.Module:
    """VGG16 with BatchNorm for 32x32 CIFAR images and a 512-wide classifier (about 15.0 M params)."""
    return VGG(num_classes, input_shape, width_mult)


@MODELS.register("vgg_tiny")
def vgg_tiny(num_classes: int, input_shape: Sequence[int], *, width_mult: float = 1 / 16) -> nn.Module:
    """vgg16_cifar's code at 1/16 width (tests, smoke runs)."""
    return VGG(num_classes, input_shape, width_mult)


# ------------------------------------------------------------------------------- ResNet ----


class CifarResNet(nn.Module):
    """ResNet for CIFAR (He et al. 2016, Sec. 4.2): conv3x3(16w) -> BN -> ReLU, three stages of
    (depth - 2) / 6 torchvision ``BasicBlock``s with 16w, 32w, 64w channels (stride 2 at stages
    2 and 3; shortcut option B: 1x1 conv + BN where the shape changes), global average pool, Linear.

    Input (B, 3, H, W) -> logits (B, num_classes). Attribute names follow torchvision's ResNet.
    """

    def __init__(self, num_classes: int, input_shape: Sequence[int], depth: int = 20, width: int = 16) -> None:
        super().__init__()
        channels = _check_shape("resnet", input_shape, 3)[0]
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"resnet: depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, ...), got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = width
        self.layer1 = self._stage(width, blocks, 1)
        self.layer2 = self._stage(2 * width, blocks, 2)
        self.layer3 = self._stage(4 * width, blocks, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(4 * width, num_classes)
        _init_weights(self)
        self.lrp_canonizer = "resnet"

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            step = stride if i == 0 else 1
            downsample = None
            if step != 1 or self.inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes, 1, stride=step, bias=False), nn.BatchNorm2d(planes)
                )
            layers.append(BasicBlock(self.inplanes, planes, step, downsample))
            self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@MODELS.register("resnet20")
def resnet20(num_classes: int, input_shape: Sequence[int], *, depth: int = 20, width: int = 16) -> nn.Module:
    """ResNet20 for CIFAR-10 (about 0.27 M parameters)."""
    return CifarResNet(num_classes, input_shape, depth, width)


@MODELS.register("resnet_tiny")
def resnet_tiny(num_classes: int, input_shape: Sequence[int], *, depth: int = 8, width: int = 4) -> nn.Module:
    """resnet20's code with one block per stage and 4/8/16 channels (tests, smoke runs)."""
    return CifarResNet(num_classes, input_shape, depth, width)


def _init_weights(model: nn.Module) -> None:
    """He-normal conv/linear weights, zero biases, BN weight 1 and bias 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------- ResNet18 ----


@MODELS.register("resnet18_voc")
def resnet18_voc(num_classes: int, input_shape: Sequence[int], *, pretrained: str | None = None) -> nn.Module:
    """torchvision ResNet18 with a ``num_classes``-way head (about 11.2 M parameters).

    pretrained: path of a local ImageNet ResNet18 state dict (e.g. torchvision's
    resnet18-f37072fd.pth); every tensor but ``fc.*`` is loaded. Never downloads.
    ``model.pretrained_source`` is the path, or "scratch".
    """
    _check_shape("resnet18_voc", input_shape, 3)
    model = resnet18(weights=None, num_classes=num_classes)
    model.pretrained_source = "scratch"
    if pretrained is not None:
        _load_backbone(model, Path(pretrained))
        model.pretrained_source = str(pretrained)
    model.lrp_canonizer = "resnet"
    return model


def _load_backbone(model: nn.Module, path: Path) -> None:
    """Copy all but ``fc.*`` from the checkpoint at ``path`` into ``model``."""
    hint = "pass the path of a torchvision ImageNet ResNet18 state dict (torch.save(model.state_dict(), path))"
    if not path.is_file():
        raise PretrainedWeightsError(f"resnet18_voc: pretrained checkpoint {path} not found; {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated file, not a torch checkpoint, ...
        raise PretrainedWeightsError(f"resnet18_voc: cannot read {path} ({error}); {hint}") from None
    if isinstance(state, dict):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"resnet18_voc: {path} holds no state dict of tensors; {hint}")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("fc.")}
    wrong = sorted(set(expected) ^ set(state)) + sorted(
        k for k in expected if k in state and state[k].shape != expected[k]
    )
    if wrong:
        raise PretrainedWeightsError(
            f"resnet18_voc: {path} does not fit ResNet18 ({len(wrong)} missing, unexpected or "
            f"mis-shaped tensors, e.g. {wrong[0]}); {hint}"
        )
    model.load_state_dict(state, strict=False)
