"""The fidelity study's report, written from its runs (``benchmarks.fidelity.study_runs``) and the
official figures: ``fidelity.md``, ``side_by_side.csv``, ``trajectory.csv``, ``switches.csv``,
``binned.csv``, ``gaps.csv`` and ``fidelity.png`` under ``results/digits_reference/``.

Nothing here depends on the time of writing: the same runs give the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.pareto import bd_rate, pareto_front
from benchmarks.provenance import commits_text
from benchmarks.tables import to_markdown
from ecqx.profiles import SWITCHES

BIN = 0.05  # sparsity bin width of the ECQx-vs-ECQ comparison
LAST = 5


def _base(runs: pd.DataFrame, profile: str) -> pd.DataFrame:
    return runs[(runs["profile"] == profile) & (runs["switch"] == "-")]


def _pp(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:+.2f}"


# ------------------------------------------------------------------ (1) beside the official figures


def side_by_side(runs: pd.DataFrame, official: dict[str, Any]) -> pd.DataFrame:
    """Initial quantization (epoch 0) of ECQ under the reference profile, seed 0, beside the official."""
    ours = _base(runs, "reference")
    ours = ours[(ours["method"] == "ecq") & (ours["seed"] == official["initial_quantization"]["seed"])]
    rows = []
    for p in official["initial_quantization"]["points"]:
        mine = ours[(ours["bits"] == p["bits"]) & np.isclose(ours["Lambda"], p["Lambda"])]
        acc, sp = (mine["initial_accuracy"].iloc[0], mine["initial_sparsity"].iloc[0]) if len(mine) else (np.nan,) * 2
        rows.append(
            {
                "bits": p["bits"],
                "Lambda": p["Lambda"],
                "official_test_accuracy": p["test_accuracy"],
                "official_sparsity": p["sparsity"],
                "test_accuracy": acc,
                "sparsity": sp,
                "sparsity_difference": sp - p["sparsity"],
            }
        )
    return pd.DataFrame(rows)


def trajectory(runs: pd.DataFrame, official: dict[str, Any]) -> pd.DataFrame:
    """The official trajectory (ECQ and ECQx per QAT epoch) beside the project's, same setup and seed."""
    t = official["trajectory"]
    sel = _base(runs, "reference")
    sel = sel[(sel["bits"] == t["bits"]) & np.isclose(sel["Lambda"], t["Lambda"]) & (sel["seed"] == t["seed"])]
    hist = {m: {h["epoch"]: h for h in sel[sel["method"] == m]["history"].iloc[0]} for m in set(sel["method"])}
    rows = []
    for e in t["epochs"]:
        row = {"epoch": e["epoch"]}
        for m in ("ecq", "ecqx"):
            mine = hist.get(m, {}).get(e["epoch"], {})
            row[f"official_{m}_test_accuracy"] = e[m]["test_accuracy"]
            row[f"{m}_test_accuracy"] = mine.get("test_accuracy", np.nan)
            row[f"official_{m}_sparsity"] = e[m]["sparsity"]
            row[f"{m}_sparsity"] = mine.get("sparsity", np.nan)
        for layer, value in e["ecq"]["layer_sparsity"].items():
            row[f"official_ecq_{layer}"] = value
            row[f"ecq_{layer}"] = hist.get("ecq", {}).get(e["epoch"], {}).get("layer_sparsity", {}).get(layer, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def sweep(runs: pd.DataFrame, official: dict[str, Any]) -> pd.DataFrame:
    """Last-5 test accuracy and sparsity of the official code at the study points (its ``sweep``)
    beside the project's under the reference profile, per method and seed."""
    ours = _base(runs, "reference").set_index(["method", "bits", "Lambda", "seed"])
    rows = []
    for r in official.get("sweep", {}).get("runs", []):
        key = (r["method"], r["bits"], r["Lambda"], r["seed"])
        mine = ours.loc[key] if key in ours.index else None
        rows.append(
            {
                "method": r["method"],
                "bits": r["bits"],
                "Lambda": r["Lambda"],
                "seed": r["seed"],
                "official_last5_accuracy": r["last5_test_accuracy"],
                "last5_accuracy": np.nan if mine is None else mine["last5_accuracy"],
                "official_last5_sparsity": r["last5_sparsity"],
                "last5_sparsity": np.nan if mine is None else mine["last5_sparsity"],
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ (2) each switch alone


def switch_effects(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method and switch: the change of last-5 accuracy and sparsity when the switch alone is
    flipped, clean -> clean + switch and reference -> reference - switch (mean over points and seeds,
    paired by point and seed), and the mean |Δ accuracy| of both directions."""
    keys = ["method", "bits", "Lambda", "seed"]
    rows = []
    for method in sorted(set(runs["method"])):
        for switch in [s for s in SWITCHES if (runs[runs["method"] == method]["switch"] == s).any()]:
            row: dict[str, Any] = {"method": method, "switch": switch}
            for base, name in (("clean", "to_reference"), ("reference", "to_clean")):
                ref = _base(runs, base)
                ref = ref[ref["method"] == method].set_index(keys)
                flip = runs[(runs["method"] == method) & (runs["profile"] == base) & (runs["switch"] == switch)]
                flip = flip.set_index(keys)
                common = ref.index.intersection(flip.index)
                d_acc = flip.loc[common, "last5_accuracy"] - ref.loc[common, "last5_accuracy"]
                d_sp = flip.loc[common, "last5_sparsity"] - ref.loc[common, "last5_sparsity"]
                row[f"d_accuracy_{name}"] = d_acc.mean()
                row[f"d_sparsity_{name}"] = d_sp.mean()
                row[f"pairs_{name}"] = len(common)
            row["mean_abs_d_accuracy"] = np.nanmean(
                [abs(row["d_accuracy_to_reference"]), abs(row["d_accuracy_to_clean"])]
            )
            rows.append(row)
    out = pd.DataFrame(rows)
    return out.sort_values(["method", "mean_abs_d_accuracy"], ascending=[True, False]).reset_index(drop=True)


# ------------------------------------------------------------------ (3) ECQx vs ECQ


def binned(runs: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy binned by sparsity (width BIN, every QAT epoch of every base run), per profile
    and method: mean accuracy and epoch count per bin, and ECQx - ECQ where both have epochs."""
    rows = []
    for profile in ("clean", "reference"):
        for _, r in _base(runs, profile).iterrows():
            for h in r["history"]:
                if h.get("epoch", 0) >= 1:
                    lo = np.floor(h["sparsity"] / BIN + 1e-9) * BIN
                    rows.append(
                        {"profile": profile, "method": r["method"], "bin": round(lo, 2), "acc": h["test_accuracy"]}
                    )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    g = df.groupby(["profile", "bin", "method"])["acc"].agg(["mean", "count"]).unstack("method")
    out = pd.DataFrame(
        {
            "ecq_accuracy": g[("mean", "ecq")],
            "ecq_epochs": g[("count", "ecq")],
            "ecqx_accuracy": g[("mean", "ecqx")],
            "ecqx_epochs": g[("count", "ecqx")],
        }
    )
    out["ecqx_minus_ecq"] = out["ecqx_accuracy"] - out["ecq_accuracy"]
    out = out.astype({"ecq_epochs": "Int64", "ecqx_epochs": "Int64"}).reset_index()
    out["bin"] = [f"{b:.2f}–{b + BIN:.2f}" for b in out["bin"]]
    return out


def bd_by_profile(runs: pd.DataFrame) -> dict[str, Any]:
    """BD-rate (%) of ECQx against ECQ per profile: one point per (bits, Λ), mean coded bytes and
    test accuracy of the selected models over seeds, Pareto fronts (negative: ECQx smaller)."""
    out = {}
    for profile in ("clean", "reference"):
        pts = _base(runs, profile).groupby(["method", "bits", "Lambda"])[["coded_bytes", "test_accuracy"]].mean()
        fronts = {}
        for m in ("ecq", "ecqx"):
            if m in pts.index.get_level_values(0):
                p = pts.loc[m].reset_index().rename(columns={"test_accuracy": "metric"})
                p["config_id"] = p["bits"].astype(str) + "/" + p["Lambda"].astype(str)
                fronts[m] = pareto_front(p)
        if len(fronts) == 2:
            out[profile] = bd_rate(
                fronts["ecq"]["coded_bytes"],
                fronts["ecq"]["metric"],
                fronts["ecqx"]["coded_bytes"],
                fronts["ecqx"]["metric"],
            )
    return out


def gaps(runs: pd.DataFrame) -> pd.DataFrame:
    """The last-5 lead of ECQx over ECQ (pp, mean over points and seeds) under each profile and with
    each switch flipped alone (for a switch both methods have, both are flipped)."""
    keys = ["bits", "Lambda", "seed"]
    rows = []
    for base in ("clean", "reference"):
        for switch in ["-", *SWITCHES]:
            x = runs[(runs["method"] == "ecqx") & (runs["profile"] == base) & (runs["switch"] == switch)]
            q_switch = switch if (runs[(runs["method"] == "ecq")]["switch"] == switch).any() else "-"
            q = runs[(runs["method"] == "ecq") & (runs["profile"] == base) & (runs["switch"] == q_switch)]
            if x.empty or q.empty:
                continue
            x, q = x.set_index(keys), q.set_index(keys)
            common = x.index.intersection(q.index)
            lead = x.loc[common, "last5_accuracy"] - q.loc[common, "last5_accuracy"]
            rows.append({"profile": base, "switch": switch, "ecqx_lead": lead.mean(), "pairs": len(common)})
    out = pd.DataFrame(rows)
    if not out.empty:
        base_lead = out[out["switch"] == "-"].set_index("profile")["ecqx_lead"]
        out["change"] = out["ecqx_lead"] - out["profile"].map(base_lead)
    return out


# ------------------------------------------------------------------ (4) the 2-bit question


def ratchet(runs: pd.DataFrame) -> pd.DataFrame:
    """ECQ and ECQx at 2 bit Λ = 0.8 under the clean profile with the official λ_max, and ECQx with
    LRP on the stepped weights in addition: last-5 accuracy, the largest layer's final sparsity and
    the mean share of its zero weights that come back per epoch (``layer_revived``, epochs 2..), for
    the layer the initial quantization prunes most."""
    sel = runs[(runs["bits"] == 2) & np.isclose(runs["Lambda"], 0.8) & (runs["profile"] == "clean")]
    sel = sel[sel["switch"].isin(["lambda_max_rule", "lambda_max_rule+relevance_model"])]
    rows = []
    for _, r in sel.sort_values(["method", "switch", "seed"]).iterrows():
        start = next((h["layer_sparsity"] for h in r["history"] if h.get("epoch") == 0), {})
        hist = [h for h in r["history"] if h.get("epoch", 0) >= 1]
        sizes = hist[-1]["layer_sparsity"] if hist else {}
        layer = max(start, key=start.get) if start else None  # the layer the initial quantization prunes most
        revived = [h["layer_revived"][layer] for h in hist[1:] if layer and "layer_revived" in h]
        rows.append(
            {
                "method": r["method"],
                "relevance_model": "-"
                if r["method"] == "ecq"
                else ("stepped" if "relevance" in r["switch"] else "quantized"),
                "seed": r["seed"],
                "last5_accuracy": r["last5_accuracy"],
                "layer": layer,
                "initial_layer_sparsity": start.get(layer, np.nan),
                "final_layer_sparsity": sizes.get(layer, np.nan),
                "mean_revived_share": float(np.mean(revived)) if revived else np.nan,
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ words and files


def findings(gap: pd.DataFrame, effects: pd.DataFrame) -> list[str]:
    """Sentences computed from the numbers: the lead under each profile, which switches it rests on."""
    if gap.empty:
        return ["No run pairs yet."]
    lead = gap[gap["switch"] == "-"].set_index("profile")["ecqx_lead"]
    out = [
        f"Last-{LAST} accuracy lead of ECQx over ECQ (mean over the points and seeds): reference profile "
        f"{_pp(lead.get('reference'))} pp, clean profile {_pp(lead.get('clean'))} pp."
    ]
    ref = gap[(gap["profile"] == "reference") & (gap["switch"] != "-")].sort_values("change")
    if len(ref) and np.isfinite(lead.get("reference", np.nan)):
        total = lead["reference"]
        rests = [r.switch for r in ref.itertuples() if total > 0 and r.change < -0.5 * total]
        parts = [f"{r.switch} {_pp(r.change)} pp" for r in ref.itertuples()]
        out.append(
            "Turning one switch of the reference profile back to clean changes the lead by: " + "; ".join(parts) + "."
        )
        out.append(
            "The reference lead rests on (turning it off alone removes more than half of it): "
            + (", ".join(rests) if rests else "no single switch")
            + "."
        )
    cl = gap[(gap["profile"] == "clean") & (gap["switch"] != "-")].sort_values("change", ascending=False)
    if len(cl):
        parts = [f"{r.switch} {_pp(r.change)} pp" for r in cl.itertuples()]
        out.append(
            "Turning one switch of the clean profile to reference changes the lead by: " + "; ".join(parts) + "."
        )
    ranked = effects.groupby("switch")["mean_abs_d_accuracy"].mean().sort_values(ascending=False)
    out.append(
        f"Switches ranked by their own effect on last-{LAST} accuracy (mean |Δ| over methods and directions): "
        + "; ".join(f"{s} {100 * v:.2f} pp" for s, v in ranked.items())
        + "."
    )
    return out


def write_report(runs: pd.DataFrame, official: dict[str, Any], out: Path) -> list[Path]:
    """Write every file of the report under ``out``; returns their paths."""
    from benchmarks.plots import plot_fidelity

    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "side_by_side": side_by_side(runs, official),
        "trajectory": trajectory(runs, official),
        "sweep": sweep(runs, official),
        "switches": switch_effects(runs),
        "binned": binned(runs),
        "gaps": gaps(runs),
        "ratchet": ratchet(runs),
    }
    paths = []
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False, float_format="%.6g")
        paths.append(out / f"{name}.csv")
    runs.drop(columns="history").to_csv(out / "runs.csv", index=False, float_format="%.6g")
    paths += [out / "runs.csv", plot_fidelity(runs, out / "fidelity.png", BIN)]
    text = markdown(tables, bd_by_profile(runs), findings(tables["gaps"], tables["switches"]), runs, official)
    (out / "fidelity.md").write_text(text)
    return [*paths, out / "fidelity.md"]


def _fmt(df: pd.DataFrame, pct: tuple[str, ...] = (), digits: int = 4) -> pd.DataFrame:
    """Cells as text: ``pct`` columns in % (2 decimals), other floats with ``digits`` decimals."""
    shown = df.copy()
    for col in shown.columns:
        if col in pct:
            shown[col] = shown[col].map(lambda v: "n/a" if pd.isna(v) else f"{100 * v:.2f}")
        elif shown[col].dtype.kind == "f":
            shown[col] = shown[col].map(lambda v: "n/a" if pd.isna(v) else f"{v:.{digits}f}")
    return shown


def markdown(tables: dict[str, pd.DataFrame], bd: dict, words: list[str], runs: pd.DataFrame, official) -> str:
    """fidelity.md: the study's question, the official figures beside ours, the switches' effects,
    ECQx vs ECQ under each profile, and the findings in words."""
    fp = runs[runs["seed"] == official["fp"]["seed"]]["fp_test_accuracy"]
    t, sw = tables["trajectory"], tables["switches"]
    acc_cols = tuple(c for c in t.columns if "accuracy" in c)
    parts = [
        "# digits_reference: the official ECQx code's behaviour, switch by switch\n",
        "Generated by `make fidelity` (`python -m benchmarks.fidelity`) from the MLflow runs of the experiment "
        f"`ecqx-bench/digits_reference-fidelity` ({len(runs)} runs; code: {commits_text(runs)}) and the official "
        "figures in "
        "`benchmarks/configs/reference/digits_official.yaml`. Setup: suite `digits_reference` (the official code's "
        "own digits setup); accuracies are test accuracies in %; last-5 = mean over the last five QAT epochs.\n",
        "## Findings\n",
        "\n".join(f"- {w}" for w in words) + "\n",
        "## 1. The reference profile beside the official code\n",
        f"FP32 baseline, seed {official['fp']['seed']}: official {100 * official['fp']['test_accuracy']:.2f} %, "
        f"ours {100 * fp.iloc[0]:.2f} %.\n"
        if len(fp)
        else "",
        "Initial quantization (one ECQ assignment before QAT), seed 0 ([side_by_side.csv](side_by_side.csv)):\n",
        to_markdown(_fmt(tables["side_by_side"], ("official_test_accuracy", "test_accuracy"))),
        f"\nLargest sparsity difference: {tables['side_by_side']['sparsity_difference'].abs().max():.4f}.\n",
        f"Trajectory at {official['trajectory']['bits']} bit, Λ = {official['trajectory']['Lambda']}, seed "
        f"{official['trajectory']['seed']} ([trajectory.csv](trajectory.csv)):\n",
        to_markdown(_fmt(t, acc_cols)),
        f"\nLast-{LAST} means at the study's points, the official code (run here through a test harness; see "
        "`sweep.source` in the YAML) beside the reference profile ([sweep.csv](sweep.csv)):\n",
        to_markdown(_fmt(tables["sweep"], ("official_last5_accuracy", "last5_accuracy"))),
        "\n## 2. Each switch alone\n",
        f"Change of last-{LAST} accuracy (pp) and sparsity (pp) when one switch is flipped: from the clean profile "
        "to its reference value, and from the reference profile to its clean value; mean over the points "
        "(4 bit Λ 0.2, 0.4; 2 bit Λ 0.4, 0.8) and seeds, paired ([switches.csv](switches.csv)).\n",
        to_markdown(_fmt(sw.assign(**{c: 100 * sw[c] for c in sw.columns if c.startswith(("d_", "mean_"))}), digits=2)),
        "\n## 3. ECQx vs ECQ under each profile\n",
        "BD-rate of ECQx against ECQ (coded bytes at equal test accuracy of the selected models; negative: ECQx "
        "smaller): " + "; ".join(f"{p} {_bd(v)}" for p, v in bd.items()) + ".\n",
        f"Last-{LAST} lead of ECQx over ECQ per profile and with one switch flipped (both methods flipped where both "
        "have the switch) ([gaps.csv](gaps.csv)):\n",
        to_markdown(
            _fmt(
                tables["gaps"].assign(
                    ecqx_lead=100 * tables["gaps"]["ecqx_lead"], change=100 * tables["gaps"]["change"]
                ),
                digits=2,
            )
        ),
        f"\nTest accuracy binned by sparsity ({BIN:g} bins over every QAT epoch of the profile's runs; "
        "[binned.csv](binned.csv)):\n",
        to_markdown(_fmt(tables["binned"], ("ecq_accuracy", "ecqx_accuracy", "ecqx_minus_ecq"))),
        "\n![accuracy vs sparsity, every QAT epoch](fidelity.png)\n",
        "\n## 4. ECQx at 2 bit, Λ = 0.8, clean profile with the official λ_max\n",
        "Under the clean profile LRP runs on the quantized weights, so a weight at zero has exactly zero relevance "
        "(R_w = w·a·R/z) and the zero cluster's cost factor ρ·(R + ε)^β stays at its minimum: a pruned weight "
        "does not come back, pruning becomes a ratchet, and a layer that the initial quantization leaves almost "
        "empty (`initial_layer_sparsity`) empties completely. `mean_revived_share` measures it: "
        "the share of a layer's zero weights that are non-zero one epoch later ([ratchet.csv](ratchet.csv)):\n",
        to_markdown(
            _fmt(
                tables["ratchet"],
                ("last5_accuracy", "initial_layer_sparsity", "final_layer_sparsity", "mean_revived_share"),
            )
        ),
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _bd(result) -> str:
    """A BD-rate of ECQx against ECQ as text (the BD reference front is ECQ's, the compared ECQx's)."""
    if result.value is not None:
        return f"{result.value:+.1f} %"
    reason = result.reason.replace("the reference front", "ECQ's front").replace("the compared front", "ECQx's front")
    return f"n/a ({reason})"
