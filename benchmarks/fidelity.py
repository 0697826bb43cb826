"""``make fidelity``: the project beside the official ECQx code, and what ECQx's advantage rests on.

On the official code's own digits setup (suite ``digits_reference``) the study runs ECQ and ECQx at
4 bit Λ ∈ {0.2, 0.4} and 2 bit Λ ∈ {0.4, 0.8} over two seeds under both fidelity profiles, and with
each switch of ``ecqx.profiles`` flipped alone, from clean to reference and from reference to
clean; plus ECQ under the reference profile at every point of the official initial-quantization
table. Runs are tracked in their own experiment (``ecqx-bench/digits_reference-fidelity``) and resume
like suites; ``write_fidelity`` regenerates ``results/digits_reference/`` from MLflow alone
(report ``fidelity.md``, CSVs, ``fidelity.png``).

Accuracies are test accuracies (fractions in data, % and pp in text); "last-5" is the mean over the
last five QAT epochs; sparsity is the share of exact zeros among the quantized weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.config import CONFIG_DIR, RunConfig, identity_fields, load_yaml, stable_hash
from benchmarks.fidelity_report import write_report
from benchmarks.runs import history, last_epochs_mean, load_runs
from benchmarks.suite import load_suite, run_config
from ecqx import METHODS
from ecqx.profiles import PROFILES, SWITCHES

SUITE = "digits_reference"
STUDY = f"{SUITE}-fidelity"  # the study's own experiment (never mixed into the suite's tables)
METHODS_COMPARED = ("ecq", "ecqx")
POINTS = ((4, 0.2), (4, 0.4), (2, 0.4), (2, 0.8))  # (bits, Λ)
SEEDS = (0, 1)
RATCHET = {"bits": 2, "Lambda": 0.8, "profile": "clean", "lambda_max_rule": "reference"}  # the 2-bit question
LAST = 5  # epochs averaged at the end of QAT
OFFICIAL = CONFIG_DIR / "reference" / "digits_official.yaml"
RESULTS = Path("results") / SUITE


def switches_of(method: str) -> list[str]:
    """The fidelity switches the method's Config has (ECQ: 3, ECQx: 7)."""
    names = {f.name for f in dataclasses.fields(METHODS.get(method).Config)}
    return [s for s in SWITCHES if s in names]


def variants(method: str) -> list[dict[str, str]]:
    """Both profiles, then every switch flipped alone: clean + switch=reference value, and
    reference + switch=clean value."""
    out = [{"profile": p} for p in PROFILES]
    for base, other in (("clean", "reference"), ("reference", "clean")):
        out += [{"profile": base, s: SWITCHES[s][other]} for s in switches_of(method)]
    return out


def study_configs(quick: bool = False) -> list[RunConfig]:
    """Every run of the study, resolved, without duplicates (``quick``: one point, one seed, the
    suite's quick budget)."""
    suite = load_suite(SUITE)
    suite.name = STUDY
    points, seeds = (POINTS[1:2], SEEDS[:1]) if quick else (POINTS, SEEDS)
    cfgs = [
        run_config(suite, method, {"bits": b, "Lambda": lam, **variant}, seed=seed, quick=quick)
        for method in METHODS_COMPARED
        for variant in variants(method)
        for b, lam in points
        for seed in seeds
    ]
    cfgs += [  # the 2-bit question: the same with LRP on the stepped weights
        run_config(suite, "ecqx", {**RATCHET, "relevance_model": "stepped"}, seed=seed, quick=quick) for seed in seeds
    ]
    official = [(p["bits"], p["Lambda"]) for p in load_yaml(OFFICIAL)["initial_quantization"]["points"]]
    cfgs += [
        run_config(suite, "ecq", {"bits": b, "Lambda": lam, "profile": "reference"}, seed=0, quick=quick)
        for b, lam in (official[:2] if quick else official)
    ]
    unique: dict[str, RunConfig] = {}
    for cfg in cfgs:
        unique.setdefault(stable_hash(identity_fields(cfg)), cfg)
    return list(unique.values())


def run_study(*, workers: int = 1, quick: bool = False, tracking_uri: str | None = None, log=print) -> list[Path]:
    """Run (or resume) every run of the study, then write the report."""
    from benchmarks.tracking import setup
    from benchmarks.workers import run_grid, summary_line, timed

    cfgs = study_configs(quick)
    points, seeds = (1, 1) if quick else (len(POINTS), len(SEEDS))
    log(f"fidelity study: {len(cfgs)} runs ({', '.join(METHODS_COMPARED)}; {points} point(s) x {seeds} seed(s))")
    setup(tracking_uri, f"ecqx-bench/{STUDY}")
    records, seconds = timed(lambda: run_grid(cfgs, workers=workers, tracking_uri=tracking_uri, name=STUDY))
    log(summary_line(STUDY, records, seconds))
    return write_fidelity(tracking_uri)


# ------------------------------------------------------------------ reading the study back


def variant_of(config: Any) -> tuple[str, str]:
    """(base profile, flipped switch or "-") of a run's typed method config."""
    base = config.profile
    flipped = [s for s in SWITCHES if hasattr(config, s) and getattr(config, s) != SWITCHES[s][base]]
    return base, flipped[0] if len(flipped) == 1 else ("-" if not flipped else "+".join(flipped))


def study_runs(tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per study run: method, bits, Λ, seed, profile, switch, the selected model's test
    accuracy, sparsity and coded bytes, last-5 means, the epoch-0 (initial quantization) numbers
    and the history."""
    df = load_runs(STUDY, tracking_uri, trials=False, coded=False)
    if df.empty:
        return df
    rows = []
    for _, r in df.iterrows():
        config, hist = r["method_config"], history(r["run_id"], tracking_uri)
        base, switch = variant_of(config)
        start = next((h for h in hist if h.get("epoch") == 0), {})
        rows.append(
            {
                "run_id": r["run_id"],
                "git_commit": r["git_commit"],
                "git_dirty": r["git_dirty"],
                "method": r["method"],
                "bits": config.bits,
                "Lambda": config.Lambda,
                "seed": int(r["seed"]),
                "profile": base,
                "switch": switch,
                "test_accuracy": r["test_accuracy"],
                "fp_test_accuracy": r["fp_test_accuracy"],
                "sparsity": r["sparsity"],
                "coded_bytes": r.get("coded_bytes", np.nan),
                "last5_accuracy": last_epochs_mean(hist, "test_accuracy", LAST),
                "last5_sparsity": last_epochs_mean(hist, "sparsity", LAST),
                "initial_accuracy": start.get("test_accuracy", np.nan),
                "initial_sparsity": start.get("sparsity", np.nan),
                "history": hist,
            }
        )
    return pd.DataFrame(rows).sort_values(["method", "profile", "switch", "bits", "Lambda", "seed"])


def write_fidelity(tracking_uri: str | None = None, out_dir: Path = RESULTS) -> list[Path]:
    """Regenerate the study's report and tables from MLflow (empty list when there are no runs)."""
    runs = study_runs(tracking_uri)
    if runs.empty:
        return []
    return write_report(runs, load_yaml(OFFICIAL), out_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.fidelity [--workers K] [--quick] [--report-only]`` (``make fidelity``)."""
    import argparse
    import sys

    from benchmarks.cli import USER_ERRORS

    ap = argparse.ArgumentParser(prog="python -m benchmarks.fidelity", description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    ap.add_argument("--quick", action="store_true", help="one point, one seed, the suite's quick budget")
    ap.add_argument("--report-only", action="store_true", help="only regenerate the report from MLflow")
    ap.add_argument("--tracking-uri", default=None)
    args = ap.parse_args(argv)
    try:
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        paths = (
            write_fidelity(args.tracking_uri)
            if args.report_only
            else run_study(workers=args.workers, quick=args.quick, tracking_uri=args.tracking_uri)
        )
    except USER_ERRORS as e:
        print(f"fidelity: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(str(p) for p in paths)}" if paths else "no runs of the fidelity study yet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
