"""Typed run and suite configs loaded from YAML, with dotted command-line overrides.

Unknown keys and wrong types fail at load time with the key's dotted name (``ConfigError``).
A method's own hyperparameters live in its nested ``Config`` dataclass (see ``ecqx.METHODS``); they
are validated by building that dataclass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """An invalid config: unknown key, wrong type or invalid value (the message names the key)."""


@dataclass
class DataConfig:
    name: str = "digits"  # registry key in benchmarks.data.DATASETS
    limit: int | None = None  # cap on examples per split (quick runs); None = all
    download: bool = False  # fetch the data set with torchvision/torchaudio where a network exists
    options: dict[str, Any] = field(default_factory=dict)  # the loader's own keys


@dataclass
class ModelConfig:
    name: str = "mlp"  # registry key in benchmarks.models.MODELS
    options: dict[str, Any] = field(default_factory=dict)  # the constructor's own keys


@dataclass
class OptimConfig:
    epochs: int = 10  # passes over the training split
    batch_size: int = 64  # examples per optimizer step
    lr: float = 1e-3  # learning rate
    optimizer: str = "adam"  # adam | sgd
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 0.0  # L2 penalty
    schedule: str = "cosine"  # cosine | constant learning-rate schedule over all steps


@dataclass
class RunConfig:
    """Everything that determines one run's numbers (its identity is a hash of this + data)."""

    suite: str = "adhoc"  # suite name (a tag; not part of the identity)
    seed: int = 0  # seeds Python, NumPy and torch
    method: str = "ecqx"  # registry key in ecqx.METHODS
    params: dict[str, Any] = field(default_factory=dict)  # the method's Config fields (Λ, b, p, ...)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=30, lr=1e-3))  # FP stage
    train: OptimConfig = field(default_factory=OptimConfig)  # quantization-aware stage
    eval_batch_size: int = 512  # examples per evaluation batch
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    verify_coding: bool = True  # encode, decode, compare and re-evaluate the bitstream


@dataclass
class SuiteConfig:
    """A grid of runs: every model x every method variant x every seed, on one base config."""

    name: str = "digits"
    description: str = ""
    base: dict[str, Any] = field(default_factory=dict)  # RunConfig fields shared by all runs
    models: list[str] = field(default_factory=lambda: ["mlp"])
    seeds: list[int] = field(default_factory=lambda: [0])
    methods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # method -> list of param sets
    quick: dict[str, Any] = field(default_factory=dict)  # overrides applied by --quick (smoke runs)
    tolerance: float = 0.01  # leaderboard: allowed drop of the test metric vs FP (absolute)


# --------------------------------------------------------------------------------------------
# generic dataclass <- dict with type checks


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp) or (Any,)
        return [_check_value(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ConfigError(f"unknown config key(s){where}: {', '.join(unknown)}; allowed: {', '.join(names)}")
    values = {k: _check_value(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**values)


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass."""
    return dataclasses.asdict(obj)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins."""
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.epochs=3", "params.Lambda=0.5"]`` -> nested dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.epochs=3)")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file raises ConfigError naming it."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def suite_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "suites").glob("*.yaml"))


def load_suite(name: str) -> SuiteConfig:
    """The suite ``benchmarks/configs/suites/<name>.yaml`` (or a path to a suite YAML file) merged
    over ``base.yaml``."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONFIG_DIR / "suites" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown suite {name!r}; known: {', '.join(suite_names())} (or a path to a suite .yaml)")
    suite = from_dict(SuiteConfig, load_yaml(path), f"suite {name}")
    suite.base = deep_merge(load_yaml(CONFIG_DIR / "base.yaml"), suite.base)
    return suite


def method_defaults(method: str) -> dict[str, Any]:
    """The paper defaults of ``method`` from ``configs/methods/<method>.yaml`` (may be empty)."""
    path = CONFIG_DIR / "methods" / f"{method}.yaml"
    return load_yaml(path) if path.is_file() else {}


def make_run_config(base: dict[str, Any], method: str, params: dict[str, Any], overrides: dict[str, Any]) -> RunConfig:
    """Resolve a run: base <- method defaults (params) <- grid params <- command-line overrides."""
    data = deep_merge(base, {"method": method, "params": deep_merge(method_defaults(method), params)})
    data = deep_merge(data, overrides)
    return from_dict(RunConfig, data)


def _non_default(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that differ from ``defaults`` (recursively for mappings)."""
    out = {}
    for k, v in values.items():
        d = defaults.get(k, _MISSING)
        if isinstance(v, dict) and isinstance(d, dict):
            sub = _non_default(v, d)
            if sub:
                out[k] = sub
        elif v != d:
            out[k] = v
    return out


_MISSING = object()


def identity_fields(cfg: RunConfig) -> dict[str, Any]:
    """The resolved, non-default fields that determine a run's numbers, plus method and seed (the
    suite name is left out; a new config field with a default leaves existing identities alone)."""
    from ecqx import METHODS

    d = to_dict(cfg)
    d.pop("suite")
    method_defaults_ = to_dict(METHODS.get(cfg.method).Config()) if cfg.method in METHODS else {}
    params = _non_default(d.pop("params"), method_defaults_)
    out = _non_default(d, to_dict(RunConfig()))
    return {**out, "method": cfg.method, "seed": cfg.seed, "params": params}


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of the canonical JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def run_key(cfg: RunConfig, data_fingerprint: str) -> str:
    """The run's identity: hash of its resolved config (incl. seed) and the data fingerprint."""
    return stable_hash({"config": identity_fields(cfg), "data": data_fingerprint})


def pretrain_key(cfg: RunConfig, data_fingerprint: str) -> str:
    """Identity of the FP checkpoint: shared by every method of a suite with the same model/data/seed."""
    d = _non_default(to_dict(cfg), to_dict(RunConfig()))
    keep = {k: d[k] for k in ("data", "model", "pretrain", "eval_batch_size") if k in d}
    return stable_hash({"pretrain": keep, "seed": cfg.seed, "data": data_fingerprint})
