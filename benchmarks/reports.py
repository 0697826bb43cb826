"""Reports generated only from MLflow: Pareto fronts, Bjøntegaard deltas, plots and layer profiles.

``write_reports(suite)`` reads the suite's verified runs (grid runs and search trials) and writes,
under ``results/<suite>/``: ``table.md``/``.csv`` (via ``tables.write_tables``), ``fronts.csv``,
``pareto.png``, ``rate_accuracy.png``, ``bd_rate.csv``/``.md``, ``profiles.csv``/``.png``/``.md``,
the explanation-drift files of ``benchmarks.explreport`` (where runs have the metrics) and
``report.md``. Nothing in them depends on the time of writing, so the same store gives the same bytes.
Which runs count (verified sizes, the suite's budget, the tolerance test) is defined in
``benchmarks.leaderboard``, shared with the leaderboard; the maths of fronts and BD deltas is in
``benchmarks.pareto``.

Units: sizes in bytes (real NNR bitstreams), metrics as fractions in data and as % in text and plots.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from benchmarks import fpreport, tables
from benchmarks.explreport import write_explanation_reports
from benchmarks.leaderboard import best_runs, load_suite_runs, report_runs
from benchmarks.pareto import BD_RANGE, bd_table, configuration_points, fronts
from benchmarks.plots import plot_pareto, plot_profiles, plot_rate_accuracy
from benchmarks.provenance import runs_line
from benchmarks.runs import download
from benchmarks.suite import SuiteConfig, load_suite

RESULTS_DIR = Path("results")
# ------------------------------------------------------------------ layer profiles


def read_layers(run_id: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The run's ``layers.csv`` artifact (one row per quantized layer; empty when it has none)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = download(run_id, "layers.csv", Path(tmp), tracking_uri)
        return pd.read_csv(path) if path.stat().st_size else pd.DataFrame()


def layer_profiles(best: pd.DataFrame, tracking_uri: str | None = None) -> pd.DataFrame:
    """Per-layer rows of the best runs: model, method, run_id, layer (position), then the layers.csv
    columns name, params, bits, sparsity (fraction), entropy_bits_per_weight and, where logged,
    relevance_share (fraction of the model's total |relevance|)."""
    parts = []
    for _, row in best.iterrows():
        layers = read_layers(row["run_id"], tracking_uri)
        if layers.empty:
            continue
        keep = [
            c
            for c in ("name", "params", "bits", "sparsity", "entropy_bits_per_weight", "relevance_share")
            if c in layers
        ]
        head = pd.DataFrame(
            {"model": row["model"], "method": row["method"], "run_id": row["run_id"], "layer": range(len(layers))}
        )
        parts.append(pd.concat([head, layers[keep]], axis=1))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


BD_TEXT = """Bjøntegaard deltas between the methods' Pareto fronts (one point per configuration, mean over its
seeds), restricted to the operating range: points within {range_pp:g} percentage points of the FP32 test
{metric} (collapsed models would otherwise dominate the averages). **BD-rate**: the average size
change, in %, of the row method against the column method at
equal test {metric}, over the {metric} range both fronts cover; negative means the row method needs
fewer bytes. **BD-metric**: the average test-{metric} difference, in percentage points, of the row
method against the column method at equal coded size, over the log-size range both fronts cover;
positive means the row method scores higher.

Interpolation: as in the modern VCEG/JVET BD implementations, piecewise cubic Hermite (PCHIP),
not the cubic polynomial of the original VCEG-M33. For BD-rate, ln(coded bytes) is fitted as a
function of the metric on each front's points sorted by metric; both curves are integrated over the
overlap and BD-rate = (exp(mean difference) - 1)·100 %. For BD-metric, the metric is fitted as a
function of ln(coded bytes) the same way. A front with fewer than 2 points, or fronts whose ranges
do not overlap, give n/a with the reason below."""


def bd_markdown(bd: pd.DataFrame, suite: str, metric: str, commits: str, explanation: str = "") -> str:
    """bd_rate.md: the definitions, a BD-rate and a BD-metric matrix per model, the n/a reasons
    (then ``explanation``: the BD summary on explanation similarity, where runs have it)."""
    parts = [f"# {suite}: Bjøntegaard-delta summary\n", BD_TEXT.format(metric=metric, range_pp=100 * BD_RANGE)]
    for model in sorted(bd["model"].unique()):
        parts += [
            f"\n## {model}\n",
            "BD-rate (% coded size, row vs column):\n",
            tables.bd_matrix(bd, model, "bd_rate_percent", "+.1f"),
            "\nBD-metric (percentage points of test " + metric + ", row vs column):\n",
            tables.bd_matrix(bd, model, "bd_metric_pp", "+.2f"),
        ]
    notes = [
        f"- {r.model}: {r.method} vs {r.reference}: "
        + "; ".join(
            f"{what} n/a ({why})" for what, why in (("BD-rate", r.bd_rate_note), ("BD-metric", r.bd_metric_note)) if why
        )
        for r in bd.itertuples()
        if r.bd_rate_note or r.bd_metric_note
    ]
    if bd.empty:
        parts.append("\nNo model has fronts of two methods: nothing to compare.")
    if notes:
        parts += ["\nNot computable:\n", "\n".join(notes)]
    return "\n".join([*parts, explanation]) + f"\n\n{commits}\n"


def best_runs_markdown(best: pd.DataFrame, metric: str) -> str:
    rows = [
        {
            "model": r["model"],
            "method": r["method"],
            "selection": r["selection"],
            "bits": r["bits"],
            "key params": r["key_params"],
            f"test {metric} (%)": f"{100 * r[f'test_{metric}']:.2f}",
            "FP32 (%)": f"{100 * r[f'fp_test_{metric}']:.2f}",
            "coded bytes": f"{r['coded_bytes']:.0f}",
            "run": f"`{r['run_id']}`",
        }
        for _, r in best.iterrows()
    ]
    return tables.to_markdown(pd.DataFrame(rows))


def profiles_markdown(best: pd.DataFrame, prof: pd.DataFrame, suite: str, metric: str, tol: float, commits: str) -> str:
    """profiles.md: the selection rule, the best runs and their per-layer numbers."""
    has_rel = "relevance_share" in prof and prof["relevance_share"].notna().any()
    parts = [
        f"# {suite}: per-layer profiles of the best run per method\n",
        f"Best run = the smallest coded size whose test {metric} is within {100 * tol:g} percentage point(s) "
        f"of its FP32 baseline, or the best test {metric} when no run of the method is. Per layer: bit width "
        "b, information content (entropy of the quantized weights, bits/weight), sparsity (% zero weights)"
        + (
            " and relevance share (% of the model's total |LRP relevance|, ECQx only)."
            if has_rel
            else ". The relevance share is omitted: the runs' layers.csv has no relevance_share column yet."
        ),
        "\n" + best_runs_markdown(best, metric),
        "\n![per-layer profiles](profiles.png)\n",
    ]
    if not prof.empty:
        cols = {
            "model": "model",
            "method": "method",
            "name": "layer",
            "params": "weights",
            "bits": "b",
            "entropy_bits_per_weight": "bits/weight",
            "sparsity": "sparsity (%)",
            "relevance_share": "relevance (%)",
        }
        shown = prof.assign(sparsity=100 * prof["sparsity"], entropy_bits_per_weight=prof["entropy_bits_per_weight"])
        if has_rel:
            shown = shown.assign(relevance_share=100 * shown["relevance_share"])
        shown = shown[[c for c in cols if c in shown and (c != "relevance_share" or has_rel)]].rename(columns=cols)
        parts.append(tables.to_markdown(shown.round(3).astype(object).where(shown.notna(), "-")))
    return "\n".join(parts) + f"\n\n{commits}\n"


def report_markdown(
    suite: SuiteConfig,
    scope: str,
    metric: str,
    bd: pd.DataFrame,
    best: pd.DataFrame,
    files: set[str],
    commits: str,
    fp_text: str = "",
    expl_text: str = "",
) -> str:
    """report.md: what was measured, links to every table and figure, FP32 beside the trivial baseline
    (``fp_text``), the BD matrices, explanation drift (``expl_text``), the best runs."""
    tol = f"{100 * suite.tolerance:g}"
    parts = [
        f"# {suite.name}: compression benchmark report\n",
        f"{suite.description}\n" if suite.description else "",
        f"Runs: {scope} Task metric: test {metric} (%), of the epoch selected on the validation split. "
        "Sizes are real NNR (DeepCABAC) bitstreams that decode back to the evaluated model (bytes). "
        f"Tolerance: {tol} percentage point(s) (absolute) below the FP32 baseline.\n",
        "Files: " + ", ".join(f"[{f}]({f})" for f in sorted(files)) + "\n",
    ]
    if "table.md" in files:
        parts.append(
            "## Summary table\n\nMean ± std over seeds per model, method, bit width and setting: "
            "[table.md](table.md) ([CSV](table.csv)).\n"
        )
    parts += [
        fp_text,
        "## Rate–accuracy fronts\n",
        f"Pareto front of every method (coded size vs test {metric}; one point "
        "per configuration, mean over its seeds; search trials included), with the FP32 baseline and the "
        f"tolerance line. Points: [fronts.csv](fronts.csv).\n\n![rate-accuracy fronts](rate_accuracy.png)\n",
        "## Pareto front per method\n",
        "Grey: every configuration; coloured: its Pareto front.\n\n![Pareto front per method](pareto.png)\n",
        "## Bjøntegaard deltas\n",
        "Row method vs column method, PCHIP interpolation; definitions and n/a reasons in "
        "[bd_rate.md](bd_rate.md) ([CSV](bd_rate.csv)).\n",
    ]
    for model in sorted(bd["model"].unique()):
        parts += [
            f"### {model}: BD-rate (% coded size)\n",
            tables.bd_matrix(bd, model, "bd_rate_percent", "+.1f"),
            f"\n### {model}: BD-metric (percentage points of test {metric})\n",
            tables.bd_matrix(bd, model, "bd_metric_pp", "+.2f") + "\n",
        ]
    parts += [
        expl_text,
        "## Best run per method and per-layer profiles\n",
        f"Smallest coded size within {tol} pp of FP32 "
        f"(else the best {metric}); per-layer numbers in [profiles.md](profiles.md) "
        "([CSV](profiles.csv)).\n",
        best_runs_markdown(best, metric),
    ]
    if "profiles.png" in files:
        parts.append("\n![per-layer profiles of the best runs](profiles.png)")
    return "\n".join(p for p in parts if p) + f"\n\n{commits}\n"


def _csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False, float_format="%.6g")
    return path


def write_reports(suite: str, tracking_uri: str | None = None, out_dir: Path | None = None) -> list[Path]:
    """Write every report of ``suite`` (a name or a suite YAML path) from MLflow under
    ``results/<suite>/`` (or ``out_dir``); returns the files written (empty without verified runs)."""
    import matplotlib.style

    cfg = load_suite(suite)
    runs = load_suite_runs(cfg.name, tracking_uri, weak_fp=True)
    if runs.empty:
        return []
    out = out_dir or RESULTS_DIR / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    gated, gate_note = fpreport.gate_scope(runs)  # runs past the FP gate on purpose: left out or flagged
    used, scope = report_runs(gated, cfg)
    scope += gate_note
    metric, commits = used["metric"].iloc[0], runs_line(used, suite)
    points = configuration_points(used, metric)
    front = fronts(points)
    bd, best = bd_table(front), best_runs(used, metric, cfg.tolerance)
    prof = layer_profiles(best, tracking_uri)
    table = tables.write_tables(cfg.name, tracking_uri, out)
    paths = [table, table.with_suffix(".csv")] if table else []
    paths += [
        _csv(front.rename(columns={"metric": f"test_{metric}", "fp": f"fp_test_{metric}"}), out / "fronts.csv"),
        _csv(bd, out / "bd_rate.csv"),
        _csv(prof, out / "profiles.csv"),
    ]
    with matplotlib.style.context("default"):
        paths += [
            plot_rate_accuracy(points, front, metric, cfg.tolerance, out / "rate_accuracy.png"),
            plot_pareto(points, front, metric, out / "pareto.png"),
        ]
        if not prof.empty:
            paths.append(plot_profiles(prof, out / "profiles.png"))
        expl_paths, expl_text, expl_bd = write_explanation_reports(
            used, points, metric, cfg.tolerance, tracking_uri, out
        )
    paths += expl_paths
    (out / "bd_rate.md").write_text(bd_markdown(bd, cfg.name, metric, commits, expl_bd))
    (out / "profiles.md").write_text(profiles_markdown(best, prof, cfg.name, metric, cfg.tolerance, commits))
    paths += [out / "bd_rate.md", out / "profiles.md"]
    files = {p.name for p in paths}
    fp_text = fpreport.fp_section(runs, metric, tables.to_markdown)
    (out / "report.md").write_text(report_markdown(cfg, scope, metric, bd, best, files, commits, fp_text, expl_text))
    return [*paths, out / "report.md"]
