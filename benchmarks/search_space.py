"""Search spaces of the trade-off search, declared in YAML per method (``configs/searches/``).

``Lambda: {type: float, low: 0.05, high: 2.0, log: true}``; plain keys are method params, dotted
keys (``train.lr``) address RunConfig fields; a ``suites: {<suite>: ...}`` section replaces entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from benchmarks import config as C
from benchmarks.config import ConfigError

SEARCH_DIR = C.CONFIG_DIR / "searches"


def parse_param(key: str, spec: Any, where: str) -> optuna.distributions.BaseDistribution:
    """``{type: float|int, low: .., high: .., log: true}`` or ``{type: categorical, choices: [..]}``
    -> the Optuna distribution; errors name the file and key. ``key``: a method param (``Lambda``)
    or a dotted RunConfig field (``train.lr``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kinds = {"float": FloatDistribution, "int": IntDistribution, "categorical": CategoricalDistribution}
    if not isinstance(spec, dict) or spec.get("type") not in kinds:
        raise ConfigError(f"{where}: {key}: expected {{type: float|int|categorical, ...}}, got {spec!r}")
    args = {k: v for k, v in spec.items() if k != "type"}
    try:
        if any(isinstance(v, str | bool) for k, v in args.items() if k in ("low", "high")):
            raise ValueError(f"low and high must be numbers, got {args.get('low')!r}, {args.get('high')!r}")
        return kinds[spec["type"]](**args)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {key}: {e}") from None


def suggest(trial: optuna.Trial, key: str, dist: optuna.distributions.BaseDistribution) -> Any:
    """The trial's value of ``key`` (through the public ``suggest_*`` API)."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(key, list(dist.choices))
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_float(key, dist.low, dist.high, log=dist.log, step=dist.step)


def _probe(dist: optuna.distributions.BaseDistribution) -> Any:
    """A value inside the space (to validate the config before the study starts)."""
    return dist.choices[0] if isinstance(dist, optuna.distributions.CategoricalDistribution) else dist.low


def load_space(method: str, suite: str, path: Path | None = None) -> dict[str, optuna.distributions.BaseDistribution]:
    """The search space of ``method`` (``configs/searches/<method>.yaml`` or ``path``), with the
    entries of its ``suites: {<suite>: ...}`` section replacing the defaults."""
    path = path or SEARCH_DIR / f"{method}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SEARCH_DIR.glob("*.yaml")))
        raise ConfigError(f"no search space for method {method!r} ({path}); known: {known}")
    data = C.load_yaml(path)
    if unknown := sorted(set(data) - {"space", "suites"}):
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: space, suites")
    entries = dict(data.get("space") or {}, **(data.get("suites") or {}).get(suite, {}))
    return {k: parse_param(k, v, str(path)) for k, v in entries.items()}


def _path(key: str) -> str:
    """A space key as a RunConfig path: ``Lambda`` -> ``params.Lambda``, ``train.lr`` unchanged."""
    return key if "." in key else f"params.{key}"


def _nest(values: dict[str, Any]) -> dict[str, Any]:
    """``{"Lambda": 0.5, "train.lr": 0.01}`` -> ``{"params": {"Lambda": 0.5}, "train": {"lr": 0.01}}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        *parents, last = _path(key).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _paths(d: dict[str, Any], prefix: str = "") -> set[str]:
    """The dotted paths of the leaves of a nested dict."""
    return set().union(
        *[_paths(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}"} for k, v in d.items()]
    )
