"""The explanation-drift part of a suite's reports, only from MLflow: the similarity–size plot, the
gallery of maps at matched sizes and the BD summary on explanation similarity.

Writes under ``results/<suite>/``: ``rate_explanation.png`` (explanation Spearman and top-10 %
overlap vs coded size, a Pareto front per method), ``explanation_gallery.png`` (a few test inputs:
the FP32 map beside each method's map of its best run within the tolerance) and
``bd_explanation.csv``; returns the Markdown section of ``report.md`` and of ``bd_rate.md``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks import tables
from benchmarks.explanations import read_gallery
from benchmarks.leaderboard import best_runs
from benchmarks.pareto import BD_RANGE, bd_explanation_table, explanation_fronts
from benchmarks.plots import plot_gallery, plot_rate_explanation

SCORE = "expl_spearman"  # the score of the fronts and BD summary (the others are in the tables)
GALLERY_ROWS = 4  # test inputs shown per model in the gallery


def all_fronts(points: pd.DataFrame, score: str) -> pd.DataFrame:
    """Each method's front of coded size vs ``score`` over every configuration (the plot's lines)."""
    return explanation_fronts(points, score, operating=False)


def has_explanations(df: pd.DataFrame) -> bool:
    return SCORE in df and df[SCORE].notna().any()


def gallery_runs(used: pd.DataFrame, metric: str, tolerance: float) -> pd.DataFrame:
    """Per model and method, the best run (smallest coded size within ``tolerance`` of FP32, else the
    best metric: ``leaderboard.best_runs``) among the explained runs of the lowest seed, so that every
    method of a model shares one FP32 model and its maps."""
    explained = used[used[SCORE].notna()]
    parts = [best_runs(g[g["seed"] == g["seed"].min()], metric, tolerance) for _, g in explained.groupby("model")]
    return pd.concat(parts, ignore_index=True) if parts else explained.iloc[:0]


def write_gallery(best: pd.DataFrame, tracking_uri: str | None, path: Path) -> Path | None:
    """explanation_gallery.png from the best runs' ``explanations.npz`` (None when none has it)."""
    blocks = []
    for model, g in best.groupby("model", sort=True):
        columns = []
        for _, r in g.sort_values("method").iterrows():
            arrays = read_gallery(r["run_id"], tracking_uri)
            if arrays is not None:
                title = f"{r['method']}\n{r['coded_bytes']:.0f} B, ρ={r[SCORE]:.2f}"
                columns.append((title, arrays))
        if columns:
            blocks.append((model, str(g["dataset"].iloc[0]), columns))
    return plot_gallery(blocks, GALLERY_ROWS, path) if blocks else None


def bd_section(bd: pd.DataFrame, level: str = "###") -> str:
    """The BD matrices on explanation similarity per model (Markdown)."""
    parts = [
        f"BD-ρ: the mean explanation Spearman ρ difference (×100, points) of the row method against the column "
        f"method at equal coded size, over the log-size range both fronts cover (positive: the row method's "
        f"explanations stay closer to FP32); BD-rate: its size change (%) at equal ρ. Fronts: coded size vs ρ "
        f"of the configurations within {100 * BD_RANGE:g} pp of the FP32 test metric (the BD-rate range), "
        "PCHIP as for the accuracy BD. CSV with n/a reasons: [bd_explanation.csv](bd_explanation.csv).\n"
    ]
    bd = bd.assign(**{f"bd_{SCORE}": 100 * bd[f"bd_{SCORE}"].astype(float)})
    for model in sorted(bd["model"].unique()):
        parts += [
            f"{level} {model}: BD-ρ (points of ρ × 100, row vs column)\n",
            tables.bd_matrix(bd, model, f"bd_{SCORE}", "+.2f"),
            f"\n{level} {model}: BD-rate at equal explanation ρ (% coded size)\n",
            tables.bd_matrix(bd, model, "bd_rate_percent", "+.1f") + "\n",
        ]
    if bd.empty:
        parts.append("No model has explanation fronts of two methods: nothing to compare.\n")
    return "\n".join(parts)


def best_table(best: pd.DataFrame, metric: str) -> str:
    rows = [
        {
            "model": r["model"],
            "method": r["method"],
            "seed": r["seed"],
            "key params": r["key_params"],
            f"test {metric} (%)": f"{100 * r[f'test_{metric}']:.2f}",
            "coded bytes": f"{r['coded_bytes']:.0f}",
            "expl. Spearman": f"{r['expl_spearman']:.3f}",
            "expl. cosine": f"{r['expl_cosine']:.3f}",
            "top-10% overlap": f"{r['expl_topk']:.3f}",
            "top-1 flips (%)": f"{100 * r['expl_flip']:.1f}",
        }
        for _, r in best.iterrows()
    ]
    return tables.to_markdown(pd.DataFrame(rows))


def write_explanation_reports(
    used: pd.DataFrame, points: pd.DataFrame, metric: str, tolerance: float, tracking_uri: str | None, out: Path
) -> tuple[list[Path], str, str]:
    """(files written, report.md section, bd_rate.md section); nothing when no run is explained."""
    if not has_explanations(used):
        return [], "", ""
    bd = bd_explanation_table(points, SCORE)
    bd.to_csv(out / "bd_explanation.csv", index=False, float_format="%.6g")
    paths = [
        out / "bd_explanation.csv",
        plot_rate_explanation(points, all_fronts, out / "rate_explanation.png"),
    ]
    best = gallery_runs(used, metric, tolerance)
    gallery = write_gallery(best, tracking_uri, out / "explanation_gallery.png")
    paths += [gallery] if gallery else []
    tol = f"{100 * tolerance:g}"
    section = [
        "## Explanation drift\n",
        "How far compression moves the model's explanations: LRP input maps (the true class explained) of "
        "the model decoded from each run's bitstream against its FP32 model, on 256 fixed test examples: "
        "mean Spearman rank correlation ρ, cosine similarity and top-10% overlap of the maps (1 = the FP32 "
        "maps) and the share of examples whose top-1 class changed (definitions: README, *Explanation "
        "drift*). Per configuration in [table.md](table.md).\n",
        "Explanation ρ and top-10% overlap vs coded size (dots: configurations, mean over seeds; lines: "
        "each method's Pareto front of size vs the score).\n\n"
        "![explanation similarity vs size](rate_explanation.png)\n",
        f"### Best run per method (lowest seed, smallest size within {tol} pp of FP32)\n",
        best_table(best, metric) + "\n",
    ]
    if gallery:
        section.append(
            "Gallery: the first test inputs of the explained subset, the FP32 map and each method's map of "
            "the run above (red: positive relevance, blue: negative).\n\n"
            "![explanation gallery](explanation_gallery.png)\n"
        )
    section += ["### Bjøntegaard deltas on explanation similarity\n", bd_section(bd, "####")]
    bd_md = "\n## Explanation similarity (BD on explanation Spearman ρ)\n\n" + bd_section(bd, "###")
    return paths, "\n".join(section), bd_md
