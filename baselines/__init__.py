"""Comparison methods (ECQ, uniform QAT, magnitude pruning) on ECQx's Method interface.

Importing this package registers them in ``ecqx.METHODS`` (``ecqx`` itself never imports it).
"""

from baselines import ecq, magnitude, uniform_qat

__all__ = ["ecq", "magnitude", "uniform_qat"]
