"""Search spaces of the trade-off search, declared in YAML per method (``configs/searches/``), and a
search as given (:class:`SearchSpec`) and as resolved (:class:`Setup`).

``Lambda: {type: float, low: 0.05, high: 2.0, log: true}``; plain keys are method params, dotted
keys (``train.lr``) address RunConfig fields; a ``suites: {<suite>: ...}`` section replaces entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from benchmarks import config as C
from benchmarks.config import ConfigError
from benchmarks.storage import DEFAULT_STORAGE
from benchmarks.suite import SuiteConfig, load_suite, run_config

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


# --- the search as given (picklable, for worker processes) and as resolved ---


@dataclass
class SearchSpec:
    """A search as given on the command line; every worker process resolves the rest from it."""

    suite: str  # suite name or path to a suite YAML
    method: str
    trials: int  # N: COMPLETE + FAIL trials the study ends with
    storage: str = DEFAULT_STORAGE  # Optuna RDB URL (sqlite:///..., postgresql://...)
    study_name: str | None = None  # default "<suite>/<method>" (+ "/quick")
    tracking_uri: str | None = None
    data_dir: Path | None = None
    quick: bool = False
    overrides: list[str] = field(default_factory=list)  # dotted key=value; a searched key is then fixed
    space_path: Path | None = None
    seed: int = 0  # sampler seed
    workers: int = 1  # processes on this machine


@dataclass
class Setup:
    """The resolved search: suite name, study name, base and fixed configs, the searched space."""

    suite: str
    study_name: str
    suite_config: SuiteConfig
    fixed: dict[str, Any]
    space: dict[str, optuna.distributions.BaseDistribution]  # key -> distribution

    def config(self, method: str, values: dict[str, Any]) -> C.RunConfig:
        """The RunConfig of one trial from its sampled ``values`` (space key -> value)."""
        return run_config(self.suite_config, method, overrides=C.deep_merge(_nest(values), self.fixed))

    def probe(self, method: str) -> C.RunConfig:
        """A representative trial's RunConfig (every searched key at its probe value)."""
        return self.config(method, {k: _probe(d) for k, d in self.space.items()})


def resolve(spec: SearchSpec) -> Setup:
    """Load the suite and the space; resolve a probe config so bad input fails before any study."""
    if spec.trials < 1 or spec.workers < 1:
        raise ConfigError("--trials and --workers must be >= 1")
    suite = load_suite(spec.suite)
    over = C.parse_overrides(spec.overrides)
    given = _paths(over)  # searched keys given on the command line are fixed
    space = {k: p for k, p in load_space(spec.method, suite.name, spec.space_path).items() if _path(k) not in given}
    name = spec.study_name or f"{suite.name}/{spec.method}" + ("/quick" if spec.quick else "")
    setup = Setup(suite.name, name, suite, C.deep_merge(suite.quick, over) if spec.quick else over, space)
    setup.probe(spec.method)
    return setup
