"""Pareto fronts and Bjøntegaard deltas of rate–metric points (pure maths on DataFrames).

Units: sizes in bytes, metrics as fractions. BD values use PCHIP interpolation over the overlap of
two fronts, as the modern VCEG/JVET implementations do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

# ------------------------------------------------------------------ fronts

EXPLANATION_SCORES = ("expl_spearman", "expl_cosine", "expl_topk", "expl_flip")  # see benchmarks.explanations


def configuration_points(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One point per configuration (model, method, params except seed): mean coded size (bytes),
    test metric and FP metric (fractions) over its seeds, with ``seeds`` and the run ids."""
    g = df.groupby(["model", "method", "config_id"], sort=True)
    explained = {c: (c, "mean") for c in EXPLANATION_SCORES if c in df}  # explanation drift, where logged
    points = g.agg(
        coded_bytes=("coded_bytes", "mean"),
        metric=(f"test_{metric}", "mean"),
        fp=(f"fp_test_{metric}", "mean"),
        seeds=("seed", "nunique"),
        bits=("bits", "first"),
        key_params=("key_params", "first"),
        kind=("kind", "first"),
        run_ids=("run_id", " ".join),
        **explained,
    )
    return points.reset_index()


def pareto_front(points: pd.DataFrame, size: str = "coded_bytes", score: str = "metric") -> pd.DataFrame:
    """The non-dominated points (no other point is at most as large and at least as good). Of equal
    sizes the best score stays, of equal scores the smallest size; exact duplicates keep the first in
    (size, -score, config_id) order. The result is sorted by size; size and score strictly increase."""
    tiebreak = ["config_id"] if "config_id" in points else []
    order = points.assign(_neg=-points[score]).sort_values([size, "_neg", *tiebreak], kind="mergesort")
    keep, best = [], -math.inf
    for idx, value in zip(order.index, order[score]):
        if value > best:
            keep.append(idx)
            best = value
    return order.loc[keep].drop(columns="_neg").reset_index(drop=True)


def fronts(points: pd.DataFrame) -> pd.DataFrame:
    """The Pareto front (coded size vs metric) of every model and method."""
    parts = [pareto_front(g) for _, g in points.groupby(["model", "method"], sort=True)]
    return pd.concat(parts, ignore_index=True) if parts else points.iloc[:0]


# ------------------------------------------------------------------ Bjøntegaard deltas


@dataclass(frozen=True)
class BDResult:
    """A Bjøntegaard delta: ``value`` (None when it cannot be computed) and the reason why not."""

    value: float | None
    reason: str = ""


def _pchip_mean(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    from scipy.interpolate import PchipInterpolator

    return float(PchipInterpolator(x, y).integrate(lo, hi)) / (hi - lo)


def _delta(ref: tuple, test: tuple, show) -> BDResult:
    """Mean of y_test(x) - y_ref(x) over the overlap of the x ranges, each y a PCHIP of its x
    (points sorted by x). ``show`` formats an x for the reason text."""
    for name, (x, _) in (("reference", ref), ("compared", test)):
        if len(x) < 2:
            return BDResult(None, f"the {name} front has {len(x)} point(s), needs 2")
        if np.any(np.diff(x) <= 0):
            raise ValueError("BD inputs must be Pareto fronts: x values repeat")
    lo, hi = max(ref[0][0], test[0][0]), min(ref[0][-1], test[0][-1])
    if hi <= lo:
        ranges = " and ".join(f"{show(x[0])}-{show(x[-1])}" for x, _ in (test, ref))
        return BDResult(None, f"no overlap ({ranges})")
    return BDResult(_pchip_mean(*test, lo, hi) - _pchip_mean(*ref, lo, hi))


def _by(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    order = np.argsort(x, kind="mergesort")
    return x[order], y[order]


def bd_rate(ref_bytes, ref_metric, test_bytes, test_metric) -> BDResult:
    """BD-rate (%) of the test front against the reference: ln(size) as a PCHIP of the metric on each
    front's points sorted by metric, mean difference over the overlapping metric range, then
    (exp(mean) - 1)·100. Negative: the test method needs fewer bytes for the same metric."""
    r = _delta(_by(ref_metric, np.log(ref_bytes)), _by(test_metric, np.log(test_bytes)), lambda m: f"{100 * m:.2f}%")
    return r if r.value is None else BDResult(100.0 * math.expm1(r.value))


def bd_metric(ref_bytes, ref_metric, test_bytes, test_metric) -> BDResult:
    """BD-metric (fraction) of the test front against the reference: the metric as a PCHIP of
    ln(size), mean difference over the overlapping ln(size) range. Positive: the test method scores
    higher at the same size."""
    return _delta(
        _by(np.log(ref_bytes), ref_metric), _by(np.log(test_bytes), test_metric), lambda s: f"{math.exp(s):.0f} B"
    )


BD_RANGE = 0.05  # Bjøntegaard deltas use front points within this (absolute) metric drop of FP


def method_pairs(front: pd.DataFrame):
    """(model, method, reference method, the method's front, the reference's front) for every
    ordered pair of different methods of a model, in a stable order."""
    for model, fm in front.groupby("model", sort=True):
        methods = sorted(fm["method"].unique())
        for a, b in ((a, b) for a in methods for b in methods if a != b):
            yield model, a, b, fm[fm["method"] == a], fm[fm["method"] == b]


def bd_table(front: pd.DataFrame) -> pd.DataFrame:
    """Every ordered pair of methods of a model: BD-rate (%) and BD-metric (percentage points) of
    ``method`` against ``reference``, with the reason where one is n/a. Only front points within
    ``BD_RANGE`` of the FP metric count (the operating range; collapsed models would dominate)."""
    rows = []
    front = front[front["metric"] >= front["fp"] - BD_RANGE]
    for model, a, b, fa, fb in method_pairs(front):
        args = (fb["coded_bytes"], fb["metric"], fa["coded_bytes"], fa["metric"])
        rate, met = bd_rate(*args), bd_metric(*args)
        rows.append(
            {
                **_pair(model, a, b, fa, fb),
                "bd_rate_percent": rate.value,
                "bd_rate_note": rate.reason,
                "bd_metric_pp": None if met.value is None else 100 * met.value,
                "bd_metric_note": met.reason,
            }
        )
    columns = [
        "model",
        "method",
        "reference",
        "points",
        "reference_points",
        "bd_rate_percent",
        "bd_rate_note",
        "bd_metric_pp",
        "bd_metric_note",
    ]
    return pd.DataFrame(rows, columns=columns)


def _pair(model: str, a: str, b: str, fa: pd.DataFrame, fb: pd.DataFrame) -> dict:
    """The columns naming one ordered pair of a BD table: model, method, reference and their front sizes."""
    return {"model": model, "method": a, "reference": b, "points": len(fa), "reference_points": len(fb)}


def explanation_fronts(points: pd.DataFrame, score: str = "expl_spearman", operating: bool = True) -> pd.DataFrame:
    """Per model and method, the Pareto front of coded size vs the explanation ``score`` (higher is
    closer to FP32) over the configurations that have the score (``operating``: only those in the
    operating range, test metric within ``BD_RANGE`` of FP, as for the BD table); empty when none."""
    if score not in points:
        return points.iloc[:0]
    inside = points[points[score].notna()]
    if operating:
        inside = inside[inside["metric"] >= inside["fp"] - BD_RANGE]
    parts = [pareto_front(g, score=score) for _, g in inside.groupby(["model", "method"], sort=True)]
    return pd.concat(parts, ignore_index=True) if parts else points.iloc[:0]


def bd_explanation_table(points: pd.DataFrame, score: str = "expl_spearman") -> pd.DataFrame:
    """Every ordered pair of methods of a model on their :func:`explanation_fronts`: BD-``score``
    (the mean score difference at equal coded size, over the overlapping log-size range; positive:
    the row method's explanations stay closer to FP32) and BD-rate (%) at equal score."""
    front, rows = explanation_fronts(points, score), []
    for model, a, b, fa, fb in method_pairs(front):
        args = (fb["coded_bytes"], fb[score], fa["coded_bytes"], fa[score])
        diff, rate = bd_metric(*args), bd_rate(*args)
        rows.append(
            {
                **_pair(model, a, b, fa, fb),
                f"bd_{score}": diff.value,
                f"bd_{score}_note": diff.reason,
                "bd_rate_percent": rate.value,
                "bd_rate_note": rate.reason,
            }
        )
    columns = ["model", "method", "reference", "points", "reference_points", f"bd_{score}", f"bd_{score}_note"]
    return pd.DataFrame(rows, columns=[*columns, "bd_rate_percent", "bd_rate_note"])
