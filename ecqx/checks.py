"""Validation helpers shared by every method's ``Config`` (one message style everywhere).

Each helper raises ``ValueError`` naming the field (with its paper symbol) and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

MIN_BITS, MAX_BITS = 2, 8  # b: codebooks of 4 to 256 centroids


def is_real(value: Any) -> bool:
    """A finite int or float (never a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_range(name: str, value: Any, low: float, high: float, low_open: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite number in [low, high] (or (low, high] with
    ``low_open``); ``high`` may be ``inf`` (then any finite number above ``low``)."""
    if not is_real(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not ((value > low if low_open else value >= low) and value <= high):
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{low}, {high}], got {value!r}")


def check_int(name: str, value: Any, low: int) -> None:
    """Raise ValueError unless ``value`` is an int (not a bool) of at least ``low``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def check_bits(bits: Any) -> None:
    """Raise ValueError unless ``bits`` (b) is an int in 2..8."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
