"""ECQ: entropy-constrained quantization = ECQx with relevance switched off (same code path)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ecqx.codebook import check_bits
from ecqx.ecqx_method import ECQx
from ecqx.method import METHODS


@METHODS.register("ecq")
class ECQ(ECQx):
    """Entropy-constrained quantization (Wiedemann et al. 2020), ECQx's assignment without LRP."""

    @dataclass(frozen=True)
    class Config:
        bits: int = 4  # b: bit width; 2^b centroids per layer, one of them exactly 0
        Lambda: float = 0.2  # Λ: entropy-constraint strength, as a share of each layer's λ_max
        lambda_max_rule: str = "thesis"  # thesis | reference (official code's λ_max)
        skip_first: bool = False  # keep the first Linear/Conv layer in FP32
        skip_last: bool = False  # keep the last Linear/Conv layer in FP32

        def __post_init__(self) -> None:
            check_bits(self.bits)
            ECQx.Config(**dataclasses.asdict(self), relevance=False)  # shared validation

    def __init__(self, config: Config | None = None) -> None:
        config = config if config is not None else self.Config()
        super().__init__(ECQx.Config(**dataclasses.asdict(config), relevance=False))
        self.ecq_config = config
