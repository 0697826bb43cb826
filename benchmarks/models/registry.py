"""The model registry (see ``benchmarks.models``)."""

from __future__ import annotations

from ecqx.registry import Registry

MODELS: Registry = Registry("model")
