"""The paper's models: build, forward pass on the documented input shape, parameter counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock

from benchmarks.models import MODELS
from benchmarks.models.paper import PretrainedWeightsError

# name: (num_classes, input_shape, parameter range, canonizer)
CASES = {
    "mlp_gsc": (12, (490,), (0.70e6, 0.73e6), "sequential_bn"),
    "mlp_gsc_tiny": (12, (490,), (1e3, 50e3), "sequential_bn"),
    "vgg16_cifar": (10, (3, 32, 32), (14.5e6, 15.5e6), "sequential_bn"),
    "vgg_tiny": (10, (3, 32, 32), (1e3, 100e3), "sequential_bn"),
    "resnet20": (10, (3, 32, 32), (0.26e6, 0.28e6), "resnet"),
    "resnet_tiny": (10, (3, 32, 32), (1e3, 20e3), "resnet"),
    "resnet18_voc": (20, (3, 64, 64), (11.1e6, 11.3e6), "resnet"),
}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_builds_runs_and_has_documented_size(name: str) -> None:
    classes, shape, (low, high), canonizer = CASES[name]
    torch.manual_seed(0)
    model = MODELS.get(name)(classes, shape)
    assert low <= count(model) <= high, f"{name}: {count(model)} parameters"
    assert model.lrp_canonizer == canonizer
    model.train()
    out = model(torch.randn(4, *shape))
    assert out.shape == (4, classes) and torch.isfinite(out).all()
    out.sum().backward()
    model.eval()
    assert model(torch.randn(1, *shape)).shape == (1, classes)


def test_paper_sizes() -> None:
    """The exact counts of the full-size models (documented in the report)."""
    assert count(MODELS.get("mlp_gsc")(12, (490,))) == 717_324
    assert count(MODELS.get("resnet20")(10, (3, 32, 32))) == 272_474
    assert count(MODELS.get("vgg16_cifar")(10, (3, 32, 32))) == 14_987_722


def test_options_resize_the_same_code() -> None:
    mlp = MODELS.get("mlp_gsc")(12, (490,), hidden=(8,))
    assert [m.out_features for m in mlp if isinstance(m, nn.Linear)] == [8, 12]
    deep = MODELS.get("resnet20")(10, (3, 32, 32), depth=32)
    assert sum(isinstance(m, BasicBlock) for m in deep.modules()) == 15
    narrow = MODELS.get("vgg16_cifar")(10, (3, 32, 32), width_mult=0.25)
    assert narrow.classifier[1].out_features == 128
    with pytest.raises(ValueError, match="6n"):
        MODELS.get("resnet20")(10, (3, 32, 32), depth=21)
    with pytest.raises(ValueError, match="multiples of 32"):
        MODELS.get("vgg16_cifar")(10, (3, 30, 30))


def test_bn_follows_every_linear_layer_for_sequential_canonizer() -> None:
    """SequentialMergeBatchNorm merges a BN into the Linear/Conv right before it."""
    for name in ("mlp_gsc_tiny", "vgg_tiny"):
        model = MODELS.get(name)(10, (490,) if "mlp" in name else (3, 32, 32))
        leaves = [m for m in model.modules() if not list(m.children())]
        for before, bn in zip(leaves, leaves[1:]):
            if isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
                assert isinstance(before, (nn.Linear, nn.Conv2d))


def test_resnet18_pretrained_backbone(tmp_path: Path) -> None:
    scratch = MODELS.get("resnet18_voc")(20, (3, 64, 64))
    assert scratch.pretrained_source == "scratch"
    torch.manual_seed(1)
    imagenet = resnet18(weights=None)  # stands in for the ImageNet checkpoint (never downloaded)
    path = tmp_path / "resnet18.pth"
    torch.save({f"module.{k}": v for k, v in imagenet.state_dict().items()}, path)
    model = MODELS.get("resnet18_voc")(20, (3, 64, 64), pretrained=str(path))
    assert model.pretrained_source == str(path)
    assert torch.equal(model.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, imagenet.layer4[1].bn2.running_var)
    assert model.fc.out_features == 20


def test_resnet18_pretrained_errors(tmp_path: Path) -> None:
    build = MODELS.get("resnet18_voc")
    with pytest.raises(PretrainedWeightsError, match="not found"):
        build(20, (3, 64, 64), pretrained=str(tmp_path / "missing.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="garbage.pth"):
        build(20, (3, 64, 64), pretrained=str(garbage))
    wrong = tmp_path / "resnet20.pth"
    torch.save(MODELS.get("resnet20")(10, (3, 32, 32)).state_dict(), wrong)
    with pytest.raises(PretrainedWeightsError, match="does not fit"):
        build(20, (3, 64, 64), pretrained=str(wrong))
