"""The FP gate in the results (from MLflow only): trivial-baseline rows, flags of weak-FP runs, the report section.

Runs carry the metrics ``trivial_val_<metric>``, ``trivial_test_<metric>`` and ``fp_val_<metric>``
(fractions) and the tag ``fp_gate`` (``passed``, or ``overridden``: the FP model was within the
margin of the trivial baseline and the run proceeded on purpose). Runs logged before the gate existed
have neither and show ``-``/n/a. Metrics are fractions in data and % in text.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from benchmarks.fpgate import OVERRIDDEN, TAG, baseline_name

GATE_COLUMN = "FP gate"


def weak_fp(df: pd.DataFrame) -> pd.Series:
    """True for runs that went past the FP gate on purpose (tag ``fp_gate=overridden``)."""
    if df.empty or TAG not in df:
        return pd.Series(False, index=df.index)
    return df[TAG] == OVERRIDDEN


def gate_cell(runs: pd.DataFrame) -> str:
    """The FP-gate status of a table row's runs: overridden if any is, passed if all passed, else '-'."""
    if TAG not in runs or runs[TAG].isna().all():
        return "-"
    return OVERRIDDEN if (runs[TAG] == OVERRIDDEN).any() else "passed"


def trivial_rows(model: str, group: pd.DataFrame, metric: str, fmt) -> tuple[dict, dict] | None:
    """(table row, CSV row) of the trivial baseline of one model (its test metric, mean over seeds),
    or None when the runs carry no ``trivial_test_<metric>`` (logged before the gate existed).
    ``fmt(series_in_percent, ".2f")`` formats mean ± std."""
    col = f"trivial_test_{metric}"
    if col not in group or group[col].isna().all():
        return None
    values = group.drop_duplicates("seed")[col].dropna() * 100
    label = f"trivial baseline ({baseline_name(metric)})"
    row = {"model": model, "method": label, "bits": "-", "setting": "-", "seeds": len(values)}
    row[f"test {metric} (%)"] = fmt(values, ".2f")
    numeric = {"model": model, "method": "trivial", "bits": None, "setting": "-", f"test_{metric}": values.mean() / 100}
    return row, numeric


def finish_table(table: pd.DataFrame, numeric: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the FP-gate column (table, last) and ``fp_gate`` (CSV, last) only when some run is overridden."""
    if GATE_COLUMN not in table:
        return table, numeric
    if not (table[GATE_COLUMN] == OVERRIDDEN).any():
        return table.drop(columns=GATE_COLUMN), numeric.drop(columns="fp_gate", errors="ignore")
    last = lambda df, col: df[[c for c in df if c != col] + [col]]  # noqa: E731
    return last(table, GATE_COLUMN), last(numeric, "fp_gate")


def table_note(df: pd.DataFrame) -> str:
    """A warning paragraph for table.md when runs went past the FP gate ('' otherwise)."""
    weak = weak_fp(df)
    if not weak.any():
        return ""
    models = ", ".join(sorted(df.loc[weak, "model"].unique()))
    return (
        f"**Weak FP baseline**: {int(weak.sum())} run(s) ({models}) went past the FP gate on purpose "
        f"(column `{GATE_COLUMN}` = {OVERRIDDEN}): their FP32 model is within the margin of the trivial "
        "baseline, so their compression numbers say little; they are kept off the leaderboard.\n\n"
    )


def gate_scope(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The runs the report's fronts and best runs use: those that passed the gate when any did (a
    sentence names the overridden ones left out), else all of them with a warning."""
    weak = weak_fp(df)
    if not weak.any():
        return df, ""
    if weak.all():
        return df, (
            f" **Every run went past the FP gate on purpose (fp_gate={OVERRIDDEN})**: the FP32 models are within "
            "the margin of the trivial baseline, so these fronts compare compressions of models that learned "
            "next to nothing."
        )
    return df[~weak], f" {int(weak.sum())} run(s) past the FP gate (fp_gate={OVERRIDDEN}) are left out."


def fp_section(df: pd.DataFrame, metric: str, markdown: Callable[[pd.DataFrame], str]) -> str:
    """report.md's section: per model, FP32 and the trivial baseline on val and test (mean over seeds)
    and the gate's verdicts; ``markdown`` renders a table (``tables.to_markdown``)."""
    rows = []
    for model, g in df.groupby("model", sort=True):
        seeds = g.drop_duplicates("seed")
        row = {"model": model, "seeds": len(seeds)}
        for split in ("val", "test"):
            for who, prefix in (("FP32", "fp"), ("trivial", "trivial")):
                col = f"{prefix}_{split}_{metric}"
                value = seeds[col].mean() if col in seeds and seeds[col].notna().any() else None
                row[f"{who} {split} {metric} (%)"] = "n/a" if value is None else f"{100 * value:.2f}"
        rows.append({**row, GATE_COLUMN: gate_cell(g)})
    return (
        "## FP32 and the trivial baseline\n\n"
        f"Trivial baseline: the {baseline_name(metric)} predictor (the training split's label shares, scored "
        f"like the task metric). The FP gate stops a suite whose FP32 val {metric} closes less than `fp_margin` "
        f"of the gap from it to 100 %; `{OVERRIDDEN}`: the run went past the gate on purpose "
        "(`--allow-weak-fp`), its results say little and it is off the leaderboard.\n\n"
        + markdown(pd.DataFrame(rows))
        + "\n"
    )
