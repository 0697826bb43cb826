"""Suites: a grid of runs (models x method settings x seeds) on one base config, from YAML.

``configs/suites/<name>.yaml`` (or any suite YAML given by path) is merged over ``configs/base.yaml``.
A suite may name ``plugins``: Python files (relative to the YAML) or modules that register a
researcher's own methods, so one method file plus one suite YAML need no edit elsewhere.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.config import (
    CONFIG_DIR,
    ConfigError,
    RunConfig,
    deep_merge,
    from_dict,
    load_yaml,
    make_run_config,
    parse_overrides,
)
from benchmarks.recipes import check_recipes, with_recipe


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
    plugins: list[str] = field(default_factory=list)  # .py files (relative to the YAML) or modules
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)  # scratch/finetune overrides (recipes.py)


def suite_names() -> list[str]:
    """The suites shipped under ``configs/suites/``."""
    return sorted(p.stem for p in (CONFIG_DIR / "suites").glob("*.yaml"))


def suite_path(name: str) -> Path:
    """The YAML file of suite ``name`` (a shipped suite's name, or a path to a suite .yaml)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONFIG_DIR / "suites" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown suite {name!r}; known: {', '.join(suite_names())} (or a path to a suite .yaml)")
    return path


def load_plugin(entry: str, folder: Path) -> None:
    """Import a plugin: a ``.py`` file (relative to ``folder``) under a module name derived from its
    path, or an importable module name. Its import registers its methods (once per process)."""
    if not entry.endswith(".py"):
        try:
            importlib.import_module(entry)
        except ImportError as e:
            raise ConfigError(f"plugins: cannot import {entry!r} ({e})") from None
        return
    path = (folder / entry).resolve()
    name = "ecqx_bench_plugin_" + "_".join(part for part in path.with_suffix("").parts[1:] if part.isidentifier())
    if name in sys.modules:
        return
    if not path.is_file():
        raise ConfigError(f"plugins: {path} not found")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ConfigError(f"plugins: importing {path} failed ({type(e).__name__}: {e})") from None


def load_suite(name: str) -> SuiteConfig:
    """Suite ``name`` (or a path to a suite YAML file) merged over ``base.yaml``; its plugins imported."""
    path = suite_path(name)
    suite = from_dict(SuiteConfig, load_yaml(path), f"suite {name}")
    suite.base = deep_merge(load_yaml(CONFIG_DIR / "base.yaml"), suite.base)
    suite.plugins = [str((path.parent / p).resolve()) if p.endswith(".py") else p for p in suite.plugins]
    check_recipes(suite.recipes, f"suite {name}")
    for entry in suite.plugins:
        load_plugin(entry, path.parent)
    return suite


def expand(variant: dict[str, Any]) -> list[dict[str, Any]]:
    """A grid variant with list values -> the product of its values ({bits: [2, 3]} -> 2 variants)."""
    keys = list(variant)
    values = [v if isinstance(v, list) else [v] for v in variant.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def run_config(
    suite: SuiteConfig,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    model: str | None = None,
    seed: int | None = None,
    quick: bool = False,
    overrides: dict[str, Any] | list[str] | None = None,
) -> RunConfig:
    """One resolved run of ``suite``: its base, the model (default: the first), the seed (default: the
    first), the suite's recipe for this run (``benchmarks.recipes``), the method's ``params``, the quick
    overrides with ``quick`` and then ``overrides``."""
    over = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    over = deep_merge(suite.quick, over) if quick else over
    base = deep_merge(
        suite.base,
        {
            "suite": suite.name,
            "model": {"name": model or suite.models[0]},
            "seed": suite.seeds[0] if seed is None else seed,
        },
    )
    return make_run_config(with_recipe(suite.recipes, base, over), method, params or {}, over)


def grid(suite: SuiteConfig, quick: bool = False, overrides: list[str] | None = None) -> list[RunConfig]:
    """Every (model, method, params, seed) of the suite as resolved, validated RunConfigs.
    ``quick`` keeps the first model, seed and variant of each method (a smoke run of every method)."""
    models, seeds = (suite.models[:1], suite.seeds[:1]) if quick else (suite.models, suite.seeds)
    over = parse_overrides(overrides or [])
    cfgs = []
    for model in models:
        for method, variants in suite.methods.items():
            settings = [p for v in variants or [{}] for p in expand(v)]
            for params in settings[:1] if quick else settings:
                for seed in seeds:
                    cfgs.append(run_config(suite, method, params, model=model, seed=seed, quick=quick, overrides=over))
    return cfgs
