"""ECQ: entropy-constrained quantization = ECQx with relevance switched off (the same code path)."""

from __future__ import annotations

from dataclasses import dataclass

from ecqx.ecqx_method import ECQConfig, EntropyConstrained
from ecqx.method import METHODS


@METHODS.register("ecq")
class ECQ(EntropyConstrained):
    """Entropy-constrained quantization (Wiedemann et al. 2020): ECQx's assignment without LRP."""

    @dataclass(frozen=True)
    class Config(ECQConfig):
        """ECQ's hyperparameters (see :class:`~ecqx.ecqx_method.ECQConfig`)."""
