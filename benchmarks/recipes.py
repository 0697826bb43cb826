"""Suite recipes: named override sets of a suite, one chosen per run (e.g. scratch vs finetune).

A suite YAML may hold ``recipes: {scratch: {...}, finetune: {...}}``: RunConfig overrides that sit
between the suite's ``base`` and the quick/command-line overrides. The run's recipe is the one named
by the ``recipe`` key when given (``recipe=finetune``), else ``finetune`` when the model gets pretrained
weights (``model.options.pretrained`` set), else ``scratch``. The chosen name is the run's ``recipe``
field (the MLflow tag ``recipe``; not part of the run identity, the overrides it applied are).
"""

from __future__ import annotations

from typing import Any

from benchmarks.config import ConfigError, deep_merge

REQUIRED = ("scratch", "finetune")


def check_recipes(recipes: dict[str, Any], where: str) -> None:
    """A suite's recipes hold both REQUIRED names (or none at all), each a mapping (ConfigError)."""
    if not recipes:
        return
    missing = [name for name in REQUIRED if name not in recipes]
    if missing:
        raise ConfigError(f"{where}: recipes must name both {' and '.join(REQUIRED)}; missing: {', '.join(missing)}")
    for name, overrides in recipes.items():
        if not isinstance(overrides, dict):
            raise ConfigError(f"{where}: recipes.{name} must be a mapping of config overrides, got {overrides!r}")


def choose(recipes: dict[str, Any], merged: dict[str, Any]) -> str:
    """The recipe of a run whose config (base and overrides merged) is ``merged``."""
    named = merged.get("recipe") or ""
    if named:
        if named not in recipes:
            raise ConfigError(
                f"recipe: unknown recipe {named!r}; known: {', '.join(recipes) or '(none in this suite)'}"
            )
        return named
    options = (merged.get("model") or {}).get("options") or {}
    return "finetune" if options.get("pretrained") is not None else "scratch"


def with_recipe(recipes: dict[str, Any], base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the chosen recipe's overrides merged in and its name set (``base`` itself when the
    suite has no recipes and none is named)."""
    if not recipes and not overrides.get("recipe"):
        return base
    name = choose(recipes, deep_merge(base, overrides))
    return deep_merge(deep_merge(base, recipes[name]), {"recipe": name})
