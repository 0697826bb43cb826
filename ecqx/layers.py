"""Which weights a method compresses: one filter over the model's Linear/Conv layers."""

from __future__ import annotations

from torch import nn

COMPRESSIBLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def select_layers(model: nn.Module, skip_first: bool = False, skip_last: bool = False) -> dict[str, nn.Module]:
    """Map ``"<module>.weight"`` state-dict names to every Linear/Conv module, in model order,
    optionally leaving out the first and/or the last such layer (kept in FP32)."""
    found = [
        (f"{name}.weight" if name else "weight", m) for name, m in model.named_modules() if isinstance(m, COMPRESSIBLE)
    ]
    if skip_first:
        found = found[1:]
    if skip_last:
        found = found[:-1]
    return dict(found)
