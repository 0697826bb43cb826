"""ecqx: entropy-constrained, explainability-driven quantization (Becking et al. 2022).

The method library: codebooks, ECQ/ECQx assignment, LRP weight relevances, straight-through
training, metrics. Knows nothing of experiments, files, MLflow or Optuna.
"""

from ecqx.assignment import assign, assign_layer
from ecqx.codebook import codebook, make_grid
from ecqx.ecqx_method import ECQx
from ecqx.layers import select_layers
from ecqx.method import METHODS, GridMethod, build_config
from ecqx.metrics import ModelMetrics, model_metrics
from ecqx.quantized import QuantizedLayer, QuantizedModel
from ecqx.registry import Registry

__all__ = [
    "ECQx",
    "METHODS",
    "GridMethod",
    "ModelMetrics",
    "QuantizedLayer",
    "QuantizedModel",
    "Registry",
    "assign",
    "assign_layer",
    "build_config",
    "codebook",
    "make_grid",
    "model_metrics",
    "select_layers",
]
