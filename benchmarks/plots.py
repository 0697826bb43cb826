"""Deterministic PNG figures of the reports (matplotlib Agg, no pyplot, no timestamps): fronts,
rate–accuracy curves, per-layer profiles and the fidelity study's accuracy–sparsity panels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

DPI = 110
COLORS = {"ecqx": "tab:red", "ecq": "tab:blue", "uniform_qat": "tab:green", "magnitude": "tab:purple"}
EXTRA_COLORS = ["tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
PROFILE_METRICS = [  # (layers.csv column, panel label, scale)
    ("entropy_bits_per_weight", "information content (bits/weight)", 1.0),
    ("sparsity", "sparsity (% zero weights)", 100.0),
    ("relevance_share", "relevance share (% of total |R|)", 100.0),
]


def _color(method: str, methods: list[str]) -> str:
    unknown = [m for m in methods if m not in COLORS]
    return COLORS.get(method) or EXTRA_COLORS[unknown.index(method) % len(EXTRA_COLORS)]


def _figure(nrows: int, ncols: int, width: float, height: float):
    """A pyplot-free Figure (Agg) and its 2-D array of axes; the default style, not the user's rc."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), dpi=DPI, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path: Path) -> Path:
    """PNG without the Software tag or any time: the same data give the same bytes."""
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def _log_size_axis(ax, metric: str) -> None:
    """Log x axis of coded bytes with plain labels at 1, 2, 5 x 10^k; grid; axis labels with units."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e3:g}k" if v >= 1e3 else f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="coded size (bytes, log scale; k = 1000)", ylabel=f"test {metric} (%)")
    ax.grid(True, which="both", alpha=0.3)


def plot_rate_accuracy(points: pd.DataFrame, front: pd.DataFrame, metric: str, tolerance: float, path: Path) -> Path:
    """A column per model: every method's Pareto front (test metric in % vs coded size in bytes, log
    x) with the FP32 baseline and the tolerance line; the lower row zooms in near FP32."""
    models, methods = sorted(front["model"].unique()), sorted(front["method"].unique())
    fig, axes = _figure(2, len(models), 6.0, 4.0)
    for j, model in enumerate(models):
        fm, fp = front[front["model"] == model], 100 * points.loc[points["model"] == model, "fp"].mean()
        for i, ax in enumerate(axes[:, j]):
            for method in [m for m in methods if m in set(fm["method"])]:
                f = fm[fm["method"] == method]
                ax.plot(
                    f["coded_bytes"], 100 * f["metric"], marker="o", ms=4, color=_color(method, methods), label=method
                )
            ax.axhline(fp, color="black", ls="--", lw=1, label=f"FP32 baseline ({fp:.2f}%)")
            ax.axhline(fp - 100 * tolerance, color="gray", ls=":", lw=1.2, label=f"FP32 - {100 * tolerance:g} pp")
            _log_size_axis(ax, metric)
            ax.set_title(f"{model}: Pareto fronts" + (", zoom near FP32" if i else ", full range"))
            ax.legend(loc="lower right", fontsize="small")
        low, top = fp - 500 * tolerance, max(fp, 100 * fm["metric"].max()) + 100 * tolerance / 2
        axes[1, j].set_ylim(low, top)
        shown = fm.loc[100 * fm["metric"] >= low, "coded_bytes"]
        if len(shown):
            axes[1, j].set_xlim(shown.min() / 1.15, shown.max() * 1.15)
    return _save(fig, path)


def plot_pareto(points: pd.DataFrame, front: pd.DataFrame, metric: str, path: Path) -> Path:
    """A panel per model (rows) and method (columns): every configuration (grey; mean over seeds)
    and the method's Pareto front (coloured), test metric (%) vs coded size (bytes, log x)."""
    models, methods = sorted(points["model"].unique()), sorted(points["method"].unique())
    fig, axes = _figure(len(models), len(methods), 4.2, 3.4)
    for i, model in enumerate(models):
        for j, method in enumerate(methods):
            ax, sel = axes[i][j], (points["model"] == model) & (points["method"] == method)
            ax.set_title(f"{model} / {method}")
            if not sel.any():
                ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes, color="gray")
                ax.set(xticks=[], yticks=[])
                continue
            f = front[(front["model"] == model) & (front["method"] == method)]
            ax.scatter(
                points.loc[sel, "coded_bytes"],
                100 * points.loc[sel, "metric"],
                s=14,
                facecolors="none",
                edgecolors="gray",
                label="configurations",
            )
            ax.plot(
                f["coded_bytes"],
                100 * f["metric"],
                marker="o",
                ms=4,
                color=_color(method, methods),
                label="Pareto front",
            )
            _log_size_axis(ax, metric)
            ax.legend(loc="lower right", fontsize="x-small")
    return _save(fig, path)


def plot_profiles(profiles: pd.DataFrame, path: Path) -> Path:
    """A row per model, a panel per per-layer metric (those logged), a line per method's best run."""
    columns = [m for m in PROFILE_METRICS if m[0] in profiles and profiles[m[0]].notna().any()]
    models, methods = sorted(profiles["model"].unique()), sorted(profiles["method"].unique())
    fig, axes = _figure(len(models), len(columns), 4.6, 3.6)
    for i, model in enumerate(models):
        pm = profiles[profiles["model"] == model]
        names = list(dict.fromkeys(pm["name"]))
        for ax, (col, label, scale) in zip(axes[i], columns):
            for method in [m for m in methods if m in set(pm["method"])]:
                p = pm[(pm["method"] == method) & pm[col].notna()]
                if p.empty:
                    continue
                x = [names.index(n) for n in p["name"]]
                ax.plot(x, scale * p[col], marker="o", ms=4, color=_color(method, methods), label=method)
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize="small")
            ax.set(title=f"{model}: {label.split(' (')[0]}", xlabel="layer (input to output)", ylabel=label)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="x-small")
    return _save(fig, path)


def plot_fidelity(runs: pd.DataFrame, path: Path, bin_width: float) -> Path:
    """One panel per fidelity profile: test accuracy vs sparsity of every QAT epoch of ECQ and ECQx
    (dots) and their means per sparsity bin (lines)."""
    import numpy as np

    fig, axes = _figure(1, 2, 5.2, 4.0)
    for ax, profile in zip(axes[0], ("clean", "reference")):
        base = runs[(runs["profile"] == profile) & (runs["switch"] == "-")]
        for method in ("ecq", "ecqx"):
            pts = [
                (h["sparsity"], h["test_accuracy"])
                for hist in base[base["method"] == method]["history"]
                for h in hist
                if h.get("epoch", 0) >= 1
            ]
            if not pts:
                continue
            sp, acc = (np.array(v) for v in zip(*pts))
            color = COLORS[method]
            ax.scatter(100 * sp, 100 * acc, s=6, alpha=0.35, color=color)
            bins = np.floor(sp / bin_width + 1e-9) * bin_width
            xs = sorted(set(bins.round(6)))
            ax.plot(
                [100 * (x + bin_width / 2) for x in xs],
                [100 * acc[np.isclose(bins, x)].mean() for x in xs],
                marker="o",
                ms=3,
                color=color,
                label=f"{method} (bin means)",
            )
        ax.set(title=f"profile {profile}", xlabel="sparsity (% zero weights)", ylabel="test accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small", loc="lower left")
    return _save(fig, path)
