"""Ablations: branches of one base config (YAML under ``configs/ablations/``), run over seeds, and a
table of paired differences against the base with 95 % confidence intervals (Student t).

Runs are tracked in their own experiment (``ecqx-bench/<suite>-ablation``) with a ``branch`` tag,
so they resume like suites and never mix into the suite's tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.config import CONFIG_DIR, ConfigError, deep_merge, from_dict, load_yaml
from benchmarks.suite import load_suite, run_config

BASE = "base"
METRICS = [  # (column in the run record, label, scale)
    ("test_{metric}", "test {metric} (pp)", 100.0),
    ("sparsity", "sparsity (pp)", 100.0),
    ("coded_bytes", "coded size (%)", None),  # relative difference
]


@dataclass
class AblationConfig:
    name: str = "digits"
    suite: str = "digits"  # suite whose base config (data, budget) the runs use
    model: str = "mlp"
    method: str = "ecqx"
    params: dict[str, Any] = field(default_factory=dict)  # the base method params
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    branches: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> RunConfig overrides
    quick: dict[str, Any] = field(default_factory=dict)  # seeds: [...], branches: N


def load_ablation(name: str) -> AblationConfig:
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONFIG_DIR / "ablations" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (CONFIG_DIR / "ablations").glob("*.yaml")))
        raise ConfigError(f"unknown ablation {name!r}; known: {known}")
    return from_dict(AblationConfig, load_yaml(path), f"ablation {name}")


def ablation_configs(ab: AblationConfig, quick: bool = False, overrides: dict[str, Any] | None = None):
    """[(branch label, seed, RunConfig)] for the base and every branch, validated up front. A branch
    changes the base's method params (``params:``) or any other RunConfig field."""
    suite = load_suite(ab.suite)
    suite.name = f"{ab.suite}-ablation"  # its own experiment: never mixed into the suite's tables
    seeds = ab.quick.get("seeds", ab.seeds[:1]) if quick else ab.seeds
    branches = list(ab.branches.items())[: ab.quick.get("branches", 2)] if quick else list(ab.branches.items())
    out = []
    for label, change in [(BASE, {}), *branches]:
        params = deep_merge(ab.params, change.get("params", {}))
        rest = {k: v for k, v in change.items() if k != "params"}
        over = deep_merge(deep_merge(rest, suite.quick) if quick else rest, overrides or {})  # quick wins over a branch
        for seed in seeds:
            cfg = run_config(suite, ab.method, params, model=ab.model, seed=seed, overrides=over)
            out.append((label, seed, cfg))
    return out


def paired_ci(diffs: list[float]) -> tuple[float, float]:
    """(mean, half width of the 95 % Student-t interval) of paired differences (nan for n < 2)."""
    from scipy import stats

    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    return mean, stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)


def delta_table(records: list[dict[str, Any]], metric: str) -> pd.DataFrame:
    """Per branch: mean of each metric and the paired difference to the base, mean ± 95 % CI."""
    df = pd.DataFrame(records)
    base = df[df.branch == BASE].set_index("seed")
    rows = []
    for label, g in df.groupby("branch", sort=False):
        g = g.set_index("seed")
        row: dict[str, Any] = {"branch": label, "seeds": len(g)}
        for column, name, scale in METRICS:
            col, name = column.format(metric=metric), name.format(metric=metric)
            common = g.index.intersection(base.index)
            if scale is None:
                diffs = [100.0 * (g.at[s, col] / base.at[s, col] - 1.0) for s in common]
            else:
                diffs = [scale * (g.at[s, col] - base.at[s, col]) for s in common]
            mean, half = paired_ci(diffs)
            row[name.split(" (")[0]] = g[col].mean()
            row[f"Δ {name}"] = (
                "0" if label == BASE else (f"{mean:+.2f}" if math.isnan(half) else f"{mean:+.2f} ± {half:.2f}")
            )
        rows.append(row)
    return pd.DataFrame(rows)


def write_ablation(ab: AblationConfig, table: pd.DataFrame, metric: str, out_dir: Path) -> Path:
    """``ablation.md`` + ``ablation.csv`` under ``out_dir``; returns the Markdown path."""
    from benchmarks.tables import to_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "ablation.csv", index=False, float_format="%.6g")
    shown = table.copy()
    for col in shown.columns:
        if shown[col].dtype.kind == "f":
            shown[col] = shown[col].map(lambda v: f"{v:.4g}")
    text = (
        f"# Ablation `{ab.name}`: {ab.method} on {ab.model} ({ab.suite} suite)\n\n"
        f"Base: `{ab.method}` with params `{ab.params}`. Each branch changes one thing. Columns: means over "
        f"seeds, and Δ = paired difference to the base over the same seeds, mean ± half width of the 95 % "
        f"Student-t interval (pp = percentage points; coded size in % of the base's). Test {metric} of the "
        "epoch selected on validation.\n\n"
        + to_markdown(shown)
        + f"\n\nGenerated by `ecqx-bench ablation {ab.name}` from the runs tracked in MLflow "
        f"(experiment `ecqx-bench/{ab.suite}-ablation`).\n"
    )
    (out_dir / "ablation.md").write_text(text)
    return out_dir / "ablation.md"


def run_ablation(
    name: str,
    *,
    quick: bool = False,
    overrides: dict[str, Any] | None = None,
    data_dir: Path | None = None,
    tracking_uri: str | None = None,
    log=print,
) -> Path:
    """Run (or resume) every branch over its seeds, then write the delta table."""
    from benchmarks.tracking import tracked_run

    ab = load_ablation(name)
    cfgs = ablation_configs(ab, quick, overrides)
    log(f"ablation {ab.name}: {len(cfgs)} runs ({len({c[0] for c in cfgs})} branches incl. base)")
    records = []
    for i, (label, seed, cfg) in enumerate(cfgs, 1):
        log(f"[{i}/{len(cfgs)}] {label} seed {seed}")
        rec = tracked_run(
            cfg,
            data_dir=data_dir,
            tracking_uri=tracking_uri,
            log=log,
            extra_tags={"branch": label, "ablation": ab.name},
        )
        records.append(dict(rec, branch=label))
    metric = "map" if "test_map" in records[0] else "accuracy"
    return write_ablation(ab, delta_table(records, metric), metric, Path("results") / ab.suite)
