"""Paper-style tables generated from the tracked MLflow runs (never typed by hand).

``write_tables(suite)`` reads every FINISHED, valid run of the suite's experiment and writes
``results/<suite>/table.md`` and ``table.csv``: per model, method, bit width and setting (Λ or
target sparsity), mean ± std over seeds of the test metric, sparsity, bits per weight, coded size
and compression ratio, after an FP baseline row per model.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks import fpreport
from benchmarks.provenance import runs_line
from benchmarks.runs import history, last_epochs_mean, load_runs
from ecqx import METHODS

RESULTS_DIR = Path("results")
SYMBOLS = {"Lambda": "Λ", "target_sparsity": "s", "p": "p", "rho": "ρ", "alpha": "α"}


def params_of(config: Any) -> dict[str, Any]:
    """The typed method parameters of a run (its ``method_config``), without the bit width."""
    if config is None or not dataclasses.is_dataclass(config):
        return {}
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "bits"}


def varying_params(df: pd.DataFrame) -> dict[str, list[str]]:
    """Per method, the parameters whose value differs between its runs (besides bits and seed)."""
    out = {}
    for method, g in df.groupby("method"):
        values = [params_of(c) for c in g["method_config"]]
        names = sorted({k for v in values for k in v})
        out[method] = [n for n in names if len({repr(v.get(n)) for v in values}) > 1]
    return out


def setting_label(row: pd.Series, varying: dict[str, list[str]], always: bool = True) -> str:
    """The grid variables of a run: 'Λ=0.4', 's=0.9', plus any other param that varies for its method
    (``always``: the method's grid variable even where it does not vary)."""
    params = params_of(row["method_config"])
    grid_variable = list(METHODS.get(row["method"]).setting_params) if always and row["method"] in METHODS else []
    names = list(dict.fromkeys([*grid_variable, *varying.get(row["method"], [])]))
    parts = [f"{SYMBOLS.get(n, n)}={params[n]}" for n in names if params.get(n) is not None]
    return ", ".join(parts) or "-"


def _mean_std(values: pd.Series, fmt: str) -> str:
    v = values.astype(float)
    if len(v) == 1 or v.std(ddof=1) == 0 or math.isnan(v.std(ddof=1)):
        return format(v.mean(), fmt)
    return f"{format(v.mean(), fmt)} ± {format(v.std(ddof=1), fmt)}"


COLUMNS = [  # (output name, source column, format, scale)
    ("test {metric} (%)", "test_{metric}", ".2f", 100.0),
    ("sparsity (%)", "sparsity", ".1f", 100.0),
    ("entropy (bits/weight)", "entropy_bits_per_weight", ".3f", 1.0),
    ("coded bits/weight", "coded_bits_per_weight", ".3f", 1.0),
    ("coded size (kB)", "coded_bytes", ".2f", 1e-3),
    ("compression ratio", "compression_ratio", ".1f", 1.0),
    ("expl. Spearman", "expl_spearman", ".3f", 1.0),  # explanation drift vs FP32 (benchmarks.explanations)
    ("expl. cosine", "expl_cosine", ".3f", 1.0),
    ("expl. top-10% overlap", "expl_topk", ".3f", 1.0),
    ("top-1 flips (%)", "expl_flip", ".1f", 100.0),
]
EXPLANATION_NOTE = (
    "Explanation drift (expl.; where logged): LRP input maps of the model decoded from its bitstream vs "
    "its FP32 model on 256 fixed test examples (the true class explained): mean Spearman rank correlation, "
    "mean cosine similarity and top-10% overlap of the maps (1 = the FP32 maps), and the share of examples "
    "whose top-1 class changed (README, *Explanation drift*).\n\n"
)


def summary_table(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(formatted table, numeric means) grouped by model, method, bits, setting; FP rows first."""
    metric = df["metric"].iloc[0] if "metric" in df else "accuracy"
    varying = varying_params(df)
    df = df.assign(setting=df.apply(setting_label, axis=1, varying=varying))
    rows, numeric = [], []
    for model, group in df.groupby("model", sort=True):
        fp = group.drop_duplicates("seed")[f"fp_test_{metric}"] * 100
        rows.append(
            {
                "model": model,
                "method": "FP32 baseline",
                "bits": 32,
                "setting": "-",
                "seeds": len(fp),
                f"test {metric} (%)": _mean_std(fp, ".2f"),
            }
        )
        numeric.append(
            {"model": model, "method": "fp32", "bits": 32, "setting": "-", f"test_{metric}": fp.mean() / 100}
        )
        rows[-1][fpreport.GATE_COLUMN] = numeric[-1]["fp_gate"] = fpreport.gate_cell(group)
        if (trivial := fpreport.trivial_rows(model, group, metric, _mean_std)) is not None:
            rows.append(trivial[0])
            numeric.append(trivial[1])
        for (method, bits, setting), g in group.groupby(["method", "bits", "setting"], sort=True):
            row = {"model": model, "method": method, "bits": bits, "setting": setting, "seeds": len(g)}
            num = dict(row, fp_gate=fpreport.gate_cell(g))
            row[fpreport.GATE_COLUMN] = num["fp_gate"]
            for label, column, fmt, scale in COLUMNS:
                col = column.format(metric=metric)
                if col in g and g[col].notna().all():
                    row[label.format(metric=metric)] = _mean_std(g[col] * scale, fmt)
                    num[col] = g[col].mean()
            rows.append(row)
            numeric.append(num)
    return fpreport.finish_table(pd.DataFrame(rows).fillna("-"), pd.DataFrame(numeric))


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (all cells as text)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def with_last_epochs(df: pd.DataFrame, k: int, tracking_uri: str | None = None) -> pd.DataFrame:
    """``df`` with the test metric and the sparsity replaced by their means over each run's last
    ``k`` QAT epochs (from its history); runs without a history are dropped."""
    metric = df["metric"].iloc[0]
    rows = [history(run_id, tracking_uri) for run_id in df["run_id"]]
    out = df.assign(
        **{
            f"test_{metric}": [last_epochs_mean(h, f"test_{metric}", k) for h in rows],
            "sparsity": [last_epochs_mean(h, "sparsity", k) for h in rows],
        }
    )
    return out[out[f"test_{metric}"].notna()].reset_index(drop=True)


def write_tables(
    suite: str, tracking_uri: str | None = None, out_dir: Path | None = None, last: int | None = None
) -> Path | None:
    """Write ``table.md`` and ``table.csv`` under ``results/<suite>/`` (with ``last=k``:
    ``table_last<k>.md``/``.csv``, test metric and sparsity as means over the last k QAT epochs);
    returns the Markdown path (None when the suite has no finished runs)."""
    df = load_runs(suite, tracking_uri, trials=False, coded=False)  # search trials: see the reports
    if not df.empty and last:
        df = with_last_epochs(df, last, tracking_uri)
    if df.empty:
        return None
    table, numeric = summary_table(df)
    out = out_dir or RESULTS_DIR / suite
    out.mkdir(parents=True, exist_ok=True)
    metric, name = df["metric"].iloc[0], f"table_last{last}" if last else "table"
    numeric.to_csv(out / f"{name}.csv", index=False, float_format="%.6g")
    selected = (
        f"mean of the last {last} QAT epochs (test {metric} and sparsity; sizes of the epoch selected on validation)"
        if last
        else "of the epoch selected on the validation split (never on test)"
    )
    header = (
        f"# {suite}: compressed models, mean ± std over seeds\n\n"
        f"Task metric: test {metric}, {selected}. "
        "Sizes are real NNR (DeepCABAC) bitstreams that decode back to the evaluated model; the "
        "compression ratio is FP32 state-dict bytes / coded bytes.\n\n"
        + (EXPLANATION_NOTE if "expl_spearman" in df and df["expl_spearman"].notna().any() else "")
        + fpreport.table_note(df)
    )
    (out / f"{name}.md").write_text(header + to_markdown(table) + "\n\n" + runs_line(df, suite) + "\n")
    return out / f"{name}.md"


def _cell(value, fmt: str) -> str:
    return "n/a" if value is None or pd.isna(value) else format(value, fmt)


def bd_matrix(bd: pd.DataFrame, model: str, column: str, fmt: str) -> str:
    """A Markdown matrix of ``column`` for one model: row = method, column = reference."""
    sub = bd[bd["model"] == model]
    methods = sorted(set(sub["method"]) | set(sub["reference"]))
    rows = []
    for a in methods:
        cells = [
            _cell(sub.loc[(sub["method"] == a) & (sub["reference"] == b), column].iloc[0], fmt) if a != b else "-"
            for b in methods
        ]
        rows.append([f"**{a}**", *cells])
    return to_markdown(pd.DataFrame(rows, columns=["method \\ reference", *methods]))
