"""ecqx: entropy-constrained, explainability-driven quantization (Becking et al. 2022).

The method library: codebooks, the entropy constraint, ECQ/ECQx assignment, LRP weight relevances,
straight-through training, metrics and coding. Knows nothing of experiments, files, MLflow or Optuna.
"""

from ecqx.assignment import assign, assign_layer
from ecqx.codebook import Grid, codebook, make_grid, symmetric_grid
from ecqx.ecqx_method import ECQConfig, ECQx, EntropyConstrained
from ecqx.latent import LatentMethod
from ecqx.layers import select_layers
from ecqx.method import METHODS, Method, bit_width, build_config
from ecqx.metrics import ModelMetrics, model_metrics
from ecqx.quantized import QuantizedLayer, QuantizedModel
from ecqx.registry import Registry

__all__ = [
    "ECQConfig",
    "ECQx",
    "EntropyConstrained",
    "Grid",
    "LatentMethod",
    "METHODS",
    "Method",
    "ModelMetrics",
    "QuantizedLayer",
    "QuantizedModel",
    "Registry",
    "assign",
    "assign_layer",
    "bit_width",
    "build_config",
    "codebook",
    "make_grid",
    "model_metrics",
    "select_layers",
    "symmetric_grid",
]
