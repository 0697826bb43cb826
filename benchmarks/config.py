"""Typed run configs: dataclasses loaded from YAML, dotted command-line overrides, run identity.

Unknown keys and wrong types fail at load time with the key's dotted name (``ConfigError``). A
method's hyperparameters are its own ``Config`` dataclass (``ecqx.METHODS``): ``RunConfig.params``
holds that instance, resolved once by :func:`make_run_config`, and its defaults are the only
defaults (YAML files hold grids and suite choices, never second copies).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import baselines  # noqa: F401  (registers the comparison methods in ecqx.METHODS)
from ecqx import METHODS
from ecqx.method import check_keys
from ecqx.profiles import SHORTHAND
from ecqx.registry import UnknownNameError

CONFIG_DIR = Path(__file__).parent / "configs"
OPTIMIZERS, SCHEDULES, SHUFFLES = ("adam", "sgd"), ("cosine", "constant"), ("stream", "epoch")
MAX_SEED = 2**32 - 1  # NumPy's seed range


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
    weight_decay_1d: float | None = None  # L2 penalty of 1-D parameters (biases, BatchNorm); None: weight_decay
    schedule: str = "cosine"  # cosine | constant learning-rate schedule over all steps
    shuffle: str = "stream"  # stream: one generator seeded once | epoch: epoch e seeds offset + 1000·seed + e
    shuffle_offset: int = 0  # the offset of ``shuffle=epoch`` (e.g. 10000 for the QAT stage of the official code)
    keep_initial: bool = True  # model selection may keep the starting weights (epoch 0)


@dataclass
class RunConfig:
    """Everything that determines one run's numbers (its identity is a hash of this + data)."""

    suite: str = "adhoc"  # suite name (a tag; not part of the identity)
    seed: int = 0  # seeds Python, NumPy and torch
    method: str = "ecqx"  # registry key in ecqx.METHODS
    params: Any = None  # the method's Config instance (Λ, b, p, ...); from a mapping via make_run_config
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=30, lr=1e-3))  # FP stage
    train: OptimConfig = field(default_factory=OptimConfig)  # quantization-aware stage
    eval_batch_size: int = 512  # examples per evaluation batch
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    verify_coding: bool = True  # encode, decode, compare and re-evaluate the bitstream
    fp_gate: bool = True  # stop before any method when the FP model is within fp_margin of the trivial baseline
    fp_margin: float = 0.1  # share of the gap trivial baseline -> 100 % the FP val metric must close (README)
    recipe: str = ""  # the suite recipe (named overrides, e.g. scratch | finetune) applied; a tag, not identity


# --------------------------------------------------------------------------------------------
# generic dataclass <- dict with type checks


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_union(value: Any, tp: Any, key: str) -> Any:
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


def _check_value(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _check_union(value, tp, key)
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
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def checked_values(cls: type, data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``data`` checked against the fields of dataclass ``cls`` (unknown keys, wrong types ->
    ConfigError naming the dotted key); returns the values converted (ints to floats, ...)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ConfigError(f"unknown config key(s){where}: {', '.join(unknown)}; allowed: {', '.join(names)}")
    return {k: _check_value(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError. A
    RunConfig is resolved by :func:`config_from_dict` (its params are typed by its method)."""
    if cls is RunConfig:
        return config_from_dict(data)
    return cls(**checked_values(cls, data, prefix))


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (the method's params included)."""
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
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is set to a value and to a mapping")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not a valid YAML scalar") from None
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file raises ConfigError naming it."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


# --------------------------------------------------------------------------------------------
# resolving a run


def method_config_class(method: str) -> type:
    """The ``Config`` dataclass of registered method ``method`` (ConfigError naming the known ones)."""
    try:
        return METHODS.get(method).Config
    except UnknownNameError as e:
        raise ConfigError(f"method: {e}") from None


def resolve_params(method: str, values: dict[str, Any] | None) -> Any:
    """The method's ``Config`` from a mapping: unknown keys, wrong types and invalid values raise
    ConfigError naming the key (``params.<field>``)."""
    cls = method_config_class(method)
    values = dict(values or {})
    try:
        check_keys(cls, values)
    except ValueError as e:
        raise ConfigError(f"params for method {method!r}: {e}") from None
    checked = checked_values(cls, values, "params")
    try:
        return cls(**checked)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"params for method {method!r}: {e}") from None


def validate(cfg: RunConfig) -> None:
    """Registry names, seed and optimizer settings of a resolved run (ConfigError naming the key)."""
    from benchmarks.data import DATASETS
    from benchmarks.models import MODELS

    for registry, name, what in ((DATASETS, cfg.data.name, "data.name"), (MODELS, cfg.model.name, "model.name")):
        try:
            registry.get(name)
        except UnknownNameError as e:
            raise ConfigError(f"{what}: {e}") from None
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError(f"seed: must be in 0..{MAX_SEED}, got {cfg.seed}")
    if cfg.eval_batch_size < 1:
        raise ConfigError(f"eval_batch_size: must be >= 1, got {cfg.eval_batch_size}")
    if not 0 <= cfg.fp_margin < 1:
        raise ConfigError(f"fp_margin: must be in [0, 1) (a share of the gap to a perfect score), got {cfg.fp_margin}")
    for stage in ("pretrain", "train"):
        o = getattr(cfg, stage)
        if o.epochs < 0 or o.batch_size < 1 or not (math.isfinite(o.lr) and o.lr > 0):
            raise ConfigError(f"{stage}: epochs must be >= 0, batch_size >= 1 and lr a finite number > 0")
        decays = (o.momentum, o.weight_decay, o.weight_decay if o.weight_decay_1d is None else o.weight_decay_1d)
        if not all(math.isfinite(v) and v >= 0 for v in decays):
            raise ConfigError(f"{stage}: momentum, weight_decay and weight_decay_1d must be finite numbers >= 0")
        if o.optimizer not in OPTIMIZERS or o.schedule not in SCHEDULES or o.shuffle not in SHUFFLES:
            raise ConfigError(f"{stage}: optimizer must be adam|sgd, schedule cosine|constant and shuffle stream|epoch")


def make_run_config(base: dict[str, Any], method: str, params: dict[str, Any], overrides: dict[str, Any]) -> RunConfig:
    """Resolve and validate a run: base <- grid params <- command-line overrides; the method's
    params become its ``Config`` (defaults from the dataclass). Raises ConfigError on bad input."""
    data = deep_merge(deep_merge(base, {"method": method, "params": params}), overrides)
    if not isinstance(data.get("params", {}), dict):
        raise ConfigError(f"params: expected a mapping, got {data['params']!r}")
    values = checked_values(RunConfig, {k: v for k, v in data.items() if k != "params"})
    cfg = RunConfig(**values, params=resolve_params(values.get("method", "ecqx"), data.get("params")))
    validate(cfg)
    return cfg


# --------------------------------------------------------------------------------------------
# identity


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
NOT_IDENTITY = ("suite", "fp_gate", "fp_margin", "recipe")  # labels and the gate: they leave the numbers alone


def identity_fields(cfg: RunConfig) -> dict[str, Any]:
    """The resolved, non-default fields that determine a run's numbers, plus method and seed (the
    suite name, the recipe's name and the FP gate's settings are left out; a new config field with a
    default leaves existing identities alone)."""
    d = to_dict(cfg)
    for name in NOT_IDENTITY:
        d.pop(name)
    params = _non_default(d.pop("params"), to_dict(type(cfg.params)()))
    params.pop(SHORTHAND, None)  # a profile counts through the switches it resolved to
    out = _non_default(d, {k: v for k, v in to_dict(RunConfig()).items() if k != "params"})
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


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from its plain-dict form (``to_dict``, e.g. a run's config.yaml), resolved and
    validated like :func:`make_run_config`."""
    if not isinstance(data, dict):
        raise ConfigError(f"a run config must be a mapping, got {type(data).__name__}")
    rest = {k: v for k, v in data.items() if k not in ("method", "params")}
    return make_run_config(rest, data.get("method", RunConfig.method), data.get("params") or {}, {})


def describe(cfg: RunConfig) -> str:
    """A short label of a run: model, method, its non-default params and the seed."""
    changed = _non_default(to_dict(cfg.params), to_dict(type(cfg.params)()))
    shown = " ".join(f"{k}={v}" for k, v in changed.items())
    return f"{cfg.model.name} {cfg.method}{' ' + shown if shown else ''} seed {cfg.seed}"
