"""Comparison methods (ECQ, uniform QAT, magnitude pruning) on ECQx's Method interface.

Each module registers itself in ``ecqx.METHODS`` when imported; the ``ecqx.methods`` entry-point
group in pyproject.toml names them, so ``METHODS`` finds them without ``ecqx`` importing this package.
"""
