"""The leaderboard, and the rules that pick runs for it and for the reports (only from MLflow).

A run counts when it FINISHED with a verified size: tag ``valid=true``, metric ``roundtrip_ok=1``
and a ``coded_bytes`` metric (bytes of a real NNR bitstream that decodes to the evaluated model).
Grid runs and search trials (runs nested under a study run) count alike.

``write_leaderboard()`` writes ``results/LEADERBOARD.md``: per suite with runs, a closed division
(the suite's own models, data and epochs) and an open division (any config on the suite's data),
each ranked by coded size among the runs within the suite's tolerance of FP32. Run it with
``python -m benchmarks.leaderboard`` (``make leaderboard``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import fpreport, tables
from benchmarks.config import RunConfig, from_dict, to_dict
from benchmarks.recipes import with_recipe
from benchmarks.runs import load_runs
from benchmarks.suite import SuiteConfig, load_suite, run_config, suite_names
from benchmarks.tracking import flatten, mlflow_params

LEADERBOARD = Path("results/LEADERBOARD.md")
TOP = 10  # entries shown per division
BUDGET_KEYS = ("data.name", "data.limit", "data.options", "model.options", "pretrain.epochs", "train.epochs")
DATA_KEYS = ("data.name", "data.limit", "data.options")  # the test split a metric is measured on
EPS = 1e-9  # float slack of the tolerance test (metric fractions)


# ------------------------------------------------------------------ which runs count


def load_suite_runs(suite: str, tracking_uri: str | None = None, *, weak_fp: bool = False) -> pd.DataFrame:
    """The runs that count for the leaderboard and the reports: every FINISHED run of the suite's
    experiment with a verified size (tag valid=true, metric roundtrip_ok=1, a coded_bytes metric),
    grid runs and search trials alike (``kind``), with ``key_params`` (see :func:`key_params`).
    Runs that went past the FP gate on purpose (tag fp_gate=overridden) count only with ``weak_fp``
    (the reports, which flag them); never for the leaderboard."""
    df = load_runs(suite, tracking_uri, trials=True, coded=True)
    if not weak_fp and not df.empty:
        df = df[~fpreport.weak_fp(df)].reset_index(drop=True)
    if not df.empty:
        df["key_params"] = df.apply(key_params, axis=1)
    return df


def key_params(row: pd.Series) -> str:
    """The method's grid variable and every param that differs from its default, e.g.
    'Λ=0.5, p=0.2' (bits are shown apart); '-' when none."""
    config = row["method_config"]
    if config is None:
        return "-"
    defaults = tables.params_of(type(config)())
    varying = {row["method"]: [k for k, v in tables.params_of(config).items() if v != defaults.get(k)]}
    return tables.setting_label(row, varying)


def _reference_params(suite: SuiteConfig, prefixes: tuple[str, ...]) -> dict[str, str]:
    flat = flatten(to_dict(from_dict(RunConfig, with_recipe(suite.recipes, suite.base, {}))))  # the default recipe
    return {k: v for k, v in flat.items() if k.startswith(prefixes)}


def matches_suite(df: pd.DataFrame, suite: SuiteConfig, prefixes: tuple[str, ...] = BUDGET_KEYS) -> pd.Series:
    """True where a run's MLflow params under ``prefixes`` equal the suite's own (absent on both
    sides counts as equal). With BUDGET_KEYS the model must also be one of the suite's models: the
    closed division (the suite's model, data and epochs); with DATA_KEYS: the suite's data set."""
    ref = _reference_params(suite, prefixes)
    keys = {c.removeprefix("params.") for c in df if c.startswith("params.")}
    mask = pd.Series(True, index=df.index)
    for key in sorted({k for k in keys if k.startswith(prefixes)} | set(ref)):
        col = df[f"params.{key}"] if f"params.{key}" in df else pd.Series(np.nan, index=df.index, dtype=object)
        mask &= col.astype(object).fillna("<absent>") == ref.get(key, "<absent>")
    if prefixes == BUDGET_KEYS:
        mask &= df["model"].isin(suite.models)
    return mask


def within_tolerance(df: pd.DataFrame, metric: str, tolerance: float) -> pd.Series:
    """True where the test metric is at most ``tolerance`` (absolute, fraction) below the run's own
    FP baseline (same model, data, seed and pretraining)."""
    return df[f"test_{metric}"] >= df[f"fp_test_{metric}"] - tolerance - EPS


# ------------------------------------------------------------------ ranking


def report_runs(df: pd.DataFrame, suite: SuiteConfig) -> tuple[pd.DataFrame, str]:
    """The runs a report uses (those with the suite's own model, data and epochs, or all when none
    has them, e.g. only --quick runs) and a sentence saying which."""
    closed = matches_suite(df, suite)
    if closed.any():
        note = f"{int(closed.sum())} verified runs with the suite's own models, data and epochs"
        others = int((~closed).sum())
        return df[closed], note + (f" ({others} runs with other settings left out)." if others else ".")
    return df, f"{len(df)} verified runs; none has the suite's own epochs/data (e.g. --quick runs), so all are used."


def best_runs(df: pd.DataFrame, metric: str, tolerance: float) -> pd.DataFrame:
    """Per model and method, the run with the smallest coded size (bytes) whose test metric is within
    ``tolerance`` of its FP baseline, or, when none is, the run with the best test metric."""
    rows = []
    ok = within_tolerance(df, metric, tolerance)
    for _, g in df.assign(_ok=ok).groupby(["model", "method"], sort=True):
        inside = g[g["_ok"]]
        if len(inside):
            pick = inside.sort_values(["coded_bytes", f"test_{metric}", "run_id"], ascending=[True, False, True])
            rule = "smallest within tolerance"
        else:
            pick = g.sort_values([f"test_{metric}", "coded_bytes", "run_id"], ascending=[False, True, True])
            rule = "best metric (none within tolerance)"
        rows.append({**pick.iloc[0].drop("_ok").to_dict(), "selection": rule})
    return pd.DataFrame(rows)


def suite_fp_bar(df: pd.DataFrame, suite: SuiteConfig, metric: str) -> float | None:
    """The open division's FP32 bar (fraction): the highest per-model mean FP test metric of the
    suite's closed-division runs (one value per model and seed); None without closed runs."""
    closed = df[matches_suite(df, suite)]
    if closed.empty:
        return None
    fp = closed.drop_duplicates(["model", "seed"]).groupby("model")[f"fp_test_{metric}"].mean()
    return float(fp.max())


def ranked(df: pd.DataFrame, metric: str, tolerance: float, bar: float | None = None, top: int = TOP) -> pd.DataFrame:
    """Runs within ``tolerance`` of their own FP32 (and of ``bar`` when given), the best seed per
    configuration, ranked by coded size (bytes) ascending (equal sizes share a rank; then higher
    metric, earlier start, run id); the first ``top``."""
    ok = within_tolerance(df, metric, tolerance)
    if bar is not None:
        ok &= df[f"test_{metric}"] >= bar - tolerance - EPS
    order = ["coded_bytes", f"test_{metric}", "start_time", "run_id"]
    best = df[ok].sort_values(order, ascending=[True, False, True, True]).drop_duplicates("config_id")
    return best.assign(rank=best["coded_bytes"].rank(method="min").astype(int)).head(top)


def _yaml_value(text: str) -> str:
    return "null" if text == "None" else text


def reproduce_command(row: pd.Series, suite: str) -> str:
    """The ``ecqx-bench run`` command line that resolves to the run's config (its MLflow params):
    suite, method, bits, model and seed as options, every other differing field as key=value."""
    params = {c.removeprefix("params."): v for c, v in row.items() if c.startswith("params.") and isinstance(v, str)}
    bits = getattr(row["method_config"], "bits", None)
    model, seed = params["model.name"], params["seed"]
    cfg = run_config(
        load_suite(suite), row["method"], {} if bits is None else {"bits": bits}, model=model, seed=int(seed)
    )
    default = mlflow_params(cfg)
    argv = ["ecqx-bench", "run", "--suite", suite, "--method", row["method"]]
    argv += ([] if bits is None else ["--bits", str(bits)]) + ["--model", model, "--seed", seed]
    argv += [f"{_override_key(k)}={_yaml_value(v)}" for k, v in sorted(params.items()) if default.get(k) != v]
    return shlex.join(argv)


def _override_key(param: str) -> str:
    """The command-line key of an MLflow param (``method.Lambda`` -> ``params.Lambda``)."""
    return "params." + param.removeprefix("method.") if param.startswith("method.") else param


# ------------------------------------------------------------------ Markdown


def board(entries: pd.DataFrame, metric: str, suite: str) -> str:
    """A Markdown table of ranked entries (metric in %, sizes in bytes)."""
    if entries.empty:
        return "No run qualifies yet."
    rows = [
        {
            "rank": r["rank"],
            "method": r["method"],
            "model": r["model"],
            "bits": r["bits"],
            "key params": r["key_params"],
            f"test {metric} (%)": f"{100 * r[f'test_{metric}']:.2f}",
            "FP32 (%)": f"{100 * r[f'fp_test_{metric}']:.2f}",
            "coded bytes": f"{r['coded_bytes']:.0f}",
            "ratio": f"{r['compression_ratio']:.1f}x",
            "expl. ρ": _score(r, "expl_spearman", ".3f"),
            "flips (%)": _score(r, "expl_flip", ".1f", 100.0),
            "date": pd.Timestamp(r["start_time"]).strftime("%Y-%m-%d"),
            "MLflow run": f"`{r['run_id']}`",
            "commit": _commit(r),
            "reproduce": f"`{reproduce_command(r, suite)}`",
        }
        for _, r in entries.iterrows()
    ]
    return tables.to_markdown(pd.DataFrame(rows))


def _score(row: pd.Series, column: str, fmt: str, scale: float = 1.0) -> str:
    """An explanation-drift cell ('-' for runs without it)."""
    value = row.get(column)
    return "-" if value is None or pd.isna(value) else format(scale * value, fmt)


def _commit(row: pd.Series) -> str:
    commit = row["git_commit"] if isinstance(row["git_commit"], str) else "unknown"
    return commit[:10] + ("+dirty" if row["git_dirty"] == "true" else "")


def suite_section(suite: str, tracking_uri: str | None = None) -> str | None:
    """The Markdown section of one suite (None when it has no verified runs)."""
    cfg = load_suite(suite)
    df = load_suite_runs(cfg.name, tracking_uri)
    if df.empty:
        return None
    metric, tol = df["metric"].iloc[0], cfg.tolerance
    closed, data = df[matches_suite(df, cfg)], df[matches_suite(df, cfg, DATA_KEYS)]
    bar = suite_fp_bar(df, cfg, metric)
    bar_text = f"{100 * bar:.2f}%" if bar is not None else "none (no closed runs): each run's own FP32 only"
    return "\n".join(
        [
            f"## {cfg.name}: test {metric}, tolerance {100 * tol:g} pp\n",
            f"{cfg.description}. {len(df)} verified runs ({int((df['kind'] == 'trial').sum())} search trials); "
            f"models {', '.join(cfg.models)}; epochs pretrain/train as in "
            f"`benchmarks/configs/suites/{cfg.name}.yaml`.\n",
            f"### Closed division ({len(closed)} runs)\n",
            board(ranked(closed, metric, tol), metric, suite),
            f"\n### Open division ({len(data)} runs; FP32 bar {bar_text})\n",
            board(ranked(data, metric, tol, bar), metric, suite),
            "",
        ]
    )


RULES = """# Leaderboard

Generated only from the MLflow store by `make leaderboard` (`python -m benchmarks.leaderboard`);
regenerate it, never edit it. Entries carry their MLflow run id, the commit of the code that ran
them (`+dirty`: with uncommitted changes) and the command that reproduces them.

Rules:

- **Score**: the coded size in bytes of the run's NNR (DeepCABAC) bitstream; smaller ranks higher.
  Equal sizes share a rank (then: higher test metric, earlier run).
- **Verified**: only FINISHED runs whose bitstream decoded back to the evaluated model (tag
  `valid=true`, `roundtrip_ok=1`) count.
- **Meaningful FP32**: runs that went past the FP gate on purpose (tag `fp_gate=overridden`: their
  FP32 model was within the margin of the trivial baseline) never count.
- **Within tolerance**: the test metric (of the epoch selected on validation) is at most the suite's
  tolerance (absolute, stated per suite) below the run's own FP32 baseline (same model, seed, data).
- **Closed division**: the suite's own models, data and training budget (its default epochs of
  both stages); grid runs and search trials alike.
- **Open division**: any configuration on the suite's data set and test split (other models,
  epochs, hyperparameters); the run must also be within the tolerance of the suite's FP32 bar (the
  best per-model mean FP32 of the closed runs), so a weaker baseline cannot lower the bar.
- One entry per configuration (its best seed); the first {top} are shown. Ratio: FP32 state-dict
  bytes / coded bytes.
- Explanation drift (shown, not ranked): expl. ρ is the mean Spearman rank correlation of the LRP
  input maps of the decoded model and its FP32 model on 256 fixed test examples (1 = the same
  ordering), flips the share of those examples whose top-1 class changed (README, *Explanation drift*).
"""


def write_leaderboard(
    tracking_uri: str | None = None, path: Path = LEADERBOARD, suites: list[str] | None = None
) -> Path:
    """Write the leaderboard of ``suites`` (default: every suite config) that have verified runs."""
    sections = [s for s in (suite_section(name, tracking_uri) for name in suites or suite_names()) if s]
    text = RULES.format(top=TOP) + "\n" + ("\n".join(sections) if sections else "No suite has verified runs yet.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.leaderboard", description=write_leaderboard.__doc__)
    ap.add_argument("suites", nargs="*", help="suite names (default: all)")
    ap.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///runs/mlflow.db)")
    ap.add_argument("--out", type=Path, default=LEADERBOARD)
    args = ap.parse_args(argv)
    print(f"wrote {write_leaderboard(args.tracking_uri, args.out, args.suites or None)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
