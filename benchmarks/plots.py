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


EXPLANATION_PANELS = [  # (points column, axis label, scale)
    ("expl_spearman", "explanation Spearman ρ vs FP32", 1.0),
    ("expl_topk", "top-10% overlap with FP32", 1.0),
]


def plot_rate_explanation(points: pd.DataFrame, fronts_of, path: Path) -> Path:
    """A column per model, a row per explanation score: every configuration (dots) and each method's
    Pareto front of coded size (bytes, log x) vs the score (lines; ``fronts_of(points, score)``)."""
    models, methods = sorted(points["model"].unique()), sorted(points["method"].unique())
    panels = [p for p in EXPLANATION_PANELS if p[0] in points and points[p[0]].notna().any()]
    fig, axes = _figure(len(panels), len(models), 6.0, 3.8)
    for i, (col, label, scale) in enumerate(panels):
        front = fronts_of(points, col)
        for j, model in enumerate(models):
            ax, pm = axes[i][j], points[(points["model"] == model) & points[col].notna()]
            for method in [m for m in methods if m in set(pm["method"])]:
                color, mine = _color(method, methods), pm[pm["method"] == method]
                ax.scatter(mine["coded_bytes"], scale * mine[col], s=10, color=color, alpha=0.35)
                f = front[(front["model"] == model) & (front["method"] == method)]
                ax.plot(f["coded_bytes"], scale * f[col], marker="o", ms=4, color=color, label=method)
            _log_size_axis(ax, "")
            ax.set(ylabel=label, title=f"{model}: {label.split(' vs')[0].split(' with')[0]}")
            ax.axhline(1.0, color="black", ls="--", lw=1)
            ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def map_image(values, input_shape, dataset: str):
    """A relevance map or an input (numpy, one value per position, or the input tensor) as a 2-D
    image: H x W for image inputs (channels summed for maps, averaged for inputs), MFCC coefficient x
    frame for gsc (490 = 49 frames x 10, time-major), a square for square 1-D inputs, else one row."""
    import numpy as np

    v, shape = np.asarray(values, dtype=float), tuple(int(s) for s in input_shape)
    if v.size != int(np.prod(shape[-2:] if len(shape) >= 3 else shape)):
        v = v.reshape(shape).mean(axis=0)  # an input of C x H x W: the channel mean
    if dataset == "gsc" and v.size == 490:
        return v.reshape(49, 10).T
    if len(shape) >= 2:
        return v.reshape(shape[-2:])
    side = int(round(v.size**0.5))
    return v.reshape(side, side) if side * side == v.size else v.reshape(1, -1)


def plot_gallery(model_rows: list[tuple[str, str, list[tuple[str, dict]]]], rows: int, path: Path) -> Path:
    """For each (model, dataset, [(column title, gallery arrays)]): ``rows`` test inputs, their FP32
    map and each method's map (red: positive relevance, blue: negative; each map scaled to its own
    largest |value|)."""
    ncols = 2 + max(len(c) for _, _, c in model_rows)
    fig, axes = _figure(rows * len(model_rows), ncols, 1.9, 1.9)
    for block, (model, dataset, columns) in enumerate(model_rows):
        first = columns[0][1]
        for r in range(min(rows, len(first["fp_maps"]))):
            ax_row = axes[block * rows + r]
            shape = first["input_shape"]
            panels = [("input", first["inputs"][r], "gray"), ("FP32", first["fp_maps"][r], "bwr")]
            panels += [(title, g["maps"][r], "bwr") for title, g in columns]
            for ax, (title, values, cmap) in zip(ax_row, panels):
                image = map_image(values, shape, dataset)
                top = max(abs(float(image.max())), abs(float(image.min())), 1e-12)
                lim = {"vmin": -top, "vmax": top} if cmap == "bwr" else {}
                ax.imshow(image, cmap=cmap, aspect="auto" if dataset == "gsc" else "equal", origin="upper", **lim)
                ax.set(xticks=[], yticks=[])
                if r == 0:
                    ax.set_title(f"{model}\n{title}" if title in ("input",) else title, fontsize="small")
            ax_row[0].set_ylabel(f"class {int(first['classes'][r])}", fontsize="small")
            for ax in ax_row[len(panels) :]:
                ax.axis("off")
    return _save(fig, path)
