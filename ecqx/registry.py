"""A tiny name -> object registry used for methods, models and data sets.

A registry may name an entry-point group: packages (``baselines``, or a researcher's own) list
modules there that register themselves on import, so ``METHODS`` knows them without ``ecqx``
importing them.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised by :meth:`Registry.get` for a name that was never registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps config names to code. ``register`` refuses duplicates; ``get`` lists known names."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._group = entry_point_group
        self._plugins_loaded = entry_point_group is None

    def _load_plugins(self) -> None:
        """Import the modules named by the entry-point group once (they register themselves)."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry_point in importlib.metadata.entry_points(group=self._group):
            if entry_point.name not in self._entries:
                entry_point.load()

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that stores the decorated object under ``name``."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The entry for ``name``; an unknown name raises an error listing the known ones."""
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._entries)
