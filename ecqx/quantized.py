"""The result every method hands back: integer grid indices per quantized layer plus the rest."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class QuantizedLayer:
    """One quantized weight tensor: ``weight = levels * step``.

    levels: int32 tensor with the weight's shape; signed grid index k (0 is the zero level).
    step: the grid's step size Δ (float, weight units).
    bits: bit width b of the layer's codebook (at most 2^b distinct levels).
    """

    levels: Tensor
    step: float
    bits: int

    def dequantize(self) -> Tensor:
        """The float32 weight tensor ``levels * step`` (product in float64, then rounded once,
        exactly as :meth:`ecqx.codebook.Grid.centroids` computes the levels)."""
        return (self.levels.to(torch.float64) * self.step).to(torch.float32)


@dataclass
class QuantizedModel:
    """A compressed model.

    quantized: state-dict name -> QuantizedLayer for every weight stored as integer indices.
    float_params: every other state-dict entry (biases, BatchNorm parameters and buffers,
        unquantized layers, pruned-but-unquantized weights), as stored tensors.
    targets: names of the weights the method compressed (quantized or pruned), in model
        order; sparsity and entropy are measured over these.
    """

    quantized: dict[str, QuantizedLayer]
    float_params: dict[str, Tensor]
    targets: list[str] = field(default_factory=list)

    def target_values(self, name: str) -> Tensor:
        """Float values of target weight ``name`` as the model uses them."""
        if name in self.quantized:
            return self.quantized[name].dequantize()
        return self.float_params[name].to(torch.float32)

    def state_dict(self) -> dict[str, Tensor]:
        """A state dict with every quantized layer dequantized (loadable with ``load_state_dict``)."""
        state = dict(self.float_params)
        for name, layer in self.quantized.items():
            state[name] = layer.dequantize()
        return state
