"""``ecqx-bench``: run one configuration, a suite's grid, regenerate tables, decode a bitstream."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from benchmarks.config import ConfigError, parse_overrides
from benchmarks.data import DatasetError
from benchmarks.explanations import ExplanationError
from benchmarks.procs import SIGNAL_EXIT, GridInterrupted
from benchmarks.suite import grid, load_suite, run_config
from ecqx.registry import UnknownNameError

USER_ERRORS = (ConfigError, DatasetError, UnknownNameError, FileNotFoundError, ValueError, ExplanationError)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None, help="folder holding the data set's standard layout")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///runs/mlflow.db)")
    p.add_argument("--quick", action="store_true", help="apply the suite's quick overrides (smoke run)")
    p.add_argument(
        "--allow-weak-fp",
        action="store_true",
        help="proceed when the FP model fails the FP gate (fp_gate=false; runs tagged fp_gate=overridden)",
    )
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.epochs=3 params.Lambda=0.5")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ecqx-bench", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one configuration")
    r.add_argument("--suite", default="digits")
    r.add_argument("--method", required=True)
    r.add_argument("--bits", type=int, default=None, help="bit width b (2..8)")
    r.add_argument("--model", default=None, help="model name (default: the suite's first model)")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--json", type=Path, default=None, help="write the final result as JSON here")
    r.add_argument("--force", action="store_true", help="rerun even if a finished run has this key")
    _common(r)
    s = sub.add_parser("suite", help="run a suite's whole grid (resumes: finished runs are skipped)")
    s.add_argument("suite")
    s.add_argument("--workers", type=int, default=1, help="worker processes on this machine (>= 1)")
    s.add_argument(
        "--storage",
        default=None,
        help="Optuna RDB URL of the grid's work queue, shared by every machine running this suite "
        "(default: sqlite:///runs/optuna.db)",
    )
    s.add_argument(
        "--estimate",
        action="store_true",
        help="time a few steps of each (model, method) and print the expected wall time; creates no run",
    )
    _common(s)
    t = sub.add_parser("tables", help="regenerate results/<suite>/ tables from MLflow")
    t.add_argument("suite")
    t.add_argument("--tracking-uri", default=None)
    t.add_argument("--last", type=int, default=None, help="also table_last<K>: means over the last K QAT epochs")
    a = sub.add_parser("ablation", help="run an ablation (configs/ablations/NAME.yaml) and write its delta table")
    a.add_argument("name")
    _common(a)
    se = sub.add_parser("search", help="multi-objective Optuna search (val metric up, coded bytes down); resumes")
    se.add_argument("suite")
    se.add_argument("--method", required=True)
    se.add_argument("--trials", type=int, required=True, help="N: COMPLETE + FAIL trials the study ends with")
    se.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    se.add_argument("--storage", default=None, help="Optuna RDB URL (default: sqlite:///runs/optuna.db)")
    se.add_argument("--study-name", default=None, help="default: SUITE/METHOD (+ /quick)")
    se.add_argument("--space", type=Path, default=None, help="search-space YAML (default: configs/searches/METHOD)")
    se.add_argument("--seed", type=int, default=0, help="sampler seed")
    _common(se)
    lb = sub.add_parser("leaderboard", help="write results/LEADERBOARD.md from every suite's runs")
    lb.add_argument("--tracking-uri", default=None)
    e = sub.add_parser("explain", help="add the explanation metrics to finished runs that lack them (no training)")
    e.add_argument("suite")
    e.add_argument("--tracking-uri", default=None)
    e.add_argument("--data-dir", type=Path, default=None)
    d = sub.add_parser("decode", help="rebuild a model from its bitstream and evaluate it on the test split")
    d.add_argument("source", help="an MLflow run id, or a .ecqx bitstream file")
    d.add_argument("--config", type=Path, default=None, help="the run's config.yaml (default: beside the file)")
    d.add_argument("--data-dir", type=Path, default=None)
    d.add_argument("--tracking-uri", default=None)
    d.add_argument("--suite", default=None, help="the run's suite (experiment) when SOURCE is a run id")
    return ap


def cmd_run(args) -> int:
    from benchmarks.tracking import tracked_run

    suite = load_suite(args.suite)
    params: dict[str, Any] = {} if args.bits is None else {"bits": args.bits}
    cfg = run_config(
        suite, args.method, params, model=args.model, seed=args.seed, quick=args.quick, overrides=args.overrides
    )
    from benchmarks.workers import print_record

    record = tracked_run(cfg, data_dir=args.data_dir, tracking_uri=args.tracking_uri, skip_finished=not args.force)
    print_record(record)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return 0


def cmd_suite(args) -> int:
    import functools

    from benchmarks.gridgate import check_grid_fp
    from benchmarks.runs import db_url, experiment_name
    from benchmarks.tracking import setup
    from benchmarks.workers import report_run, run_grid, summary_line, timed

    suite = load_suite(args.suite)
    cfgs = grid(suite, quick=args.quick, overrides=args.overrides)
    quick = " (quick: first model, seed and setting per method)" if args.quick else ""
    print(f"suite {suite.name}: {len(cfgs)} runs with {args.workers} worker(s){quick}", flush=True)
    if args.estimate:
        from benchmarks.estimate import estimate
        from benchmarks.estimate import report as estimate_report

        print(estimate_report(estimate(cfgs, args.data_dir), suite.name, args.workers))
        return 0
    setup(args.tracking_uri, experiment_name(suite.name))  # create/migrate the store once, before any worker
    check_grid_fp(cfgs, args.data_dir, args.tracking_uri)  # every FP model through the gate before any method
    records, seconds = timed(
        lambda: run_grid(
            cfgs,
            workers=args.workers,
            data_dir=args.data_dir,
            tracking_uri=args.tracking_uri,
            report=functools.partial(report_run, args.workers),
            plugins=suite.plugins,
            storage=db_url(args.storage),
            name=suite.name,
        )
    )
    print(summary_line(suite.name, records, seconds))
    if not all(records):
        return 1
    return _print_tables(args.suite, args.tracking_uri)


def _print_tables(suite: str, tracking_uri: str | None) -> int:
    """Write the table and the reports (fronts, BD-rate, profiles) from MLflow; print the table."""
    from benchmarks.reports import write_reports

    written = write_reports(suite, tracking_uri)
    table = next((p for p in written if p.name == "table.md"), None)
    if table is None:
        print(f"no finished runs for suite {suite}")
        return 1
    print(table.read_text())
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def cmd_tables(args) -> int:
    code = _print_tables(args.suite, args.tracking_uri)
    if args.last is not None:
        from benchmarks.tables import write_tables

        if args.last < 1:
            raise ConfigError(f"--last must be >= 1, got {args.last}")
        path = write_tables(load_suite(args.suite).name, args.tracking_uri, last=args.last)
        if path is not None:
            print(path.read_text())
            print(f"wrote {path} and {path.with_suffix('.csv')}")
    return code


def cmd_decode(args) -> int:
    from benchmarks.decode import decode_and_evaluate

    result = decode_and_evaluate(
        args.source, config_path=args.config, data_dir=args.data_dir, tracking_uri=args.tracking_uri
    )
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def cmd_explain(args) -> int:
    from benchmarks.explanations import explain_suite

    name = load_suite(args.suite).name
    done, had = explain_suite(name, args.tracking_uri, data_dir=args.data_dir)
    print(f"suite {name}: explanation metrics added to {done} run(s); {had} had them already")
    return 0


def cmd_ablation(args) -> int:
    from benchmarks.ablation import run_ablation

    path = run_ablation(
        args.name,
        quick=args.quick,
        overrides=parse_overrides(args.overrides),
        data_dir=args.data_dir,
        tracking_uri=args.tracking_uri,
    )
    print(path.read_text())
    print(f"wrote {path} and {path.with_suffix('.csv')}")
    return 0


def cmd_search(args) -> int:
    from benchmarks.search import main as search_main

    return search_main(args)


def cmd_leaderboard(args) -> int:
    from benchmarks.leaderboard import write_leaderboard

    path = write_leaderboard(args.tracking_uri)
    print(path.read_text())
    print(f"wrote {path}")
    return 0


COMMANDS = {
    "leaderboard": cmd_leaderboard,
    "run": cmd_run,
    "suite": cmd_suite,
    "tables": cmd_tables,
    "decode": cmd_decode,
    "explain": cmd_explain,
    "ablation": cmd_ablation,
    "search": cmd_search,
}


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args, extra = ap.parse_known_args(argv)
    stray = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if stray:
        ap.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:  # key=value overrides given after options
        args.overrides = [*args.overrides, *extra]
    if getattr(args, "allow_weak_fp", False):
        args.overrides = [*args.overrides, "fp_gate=false"]
    try:
        from benchmarks.preflight import check_args

        check_args(args)  # stores, paths, --workers: one line before anything runs
        return COMMANDS[args.command](args)
    except USER_ERRORS as e:
        print(f"ecqx-bench: error: {e}", file=sys.stderr)
        return 2
    except GridInterrupted as e:
        print(f"ecqx-bench: {e.line}", file=sys.stderr, flush=True)
        return e.code
    except KeyboardInterrupt as e:
        code = SIGNAL_EXIT.get(getattr(e, "signum", signal.SIGINT), 130)
        print("ecqx-bench: interrupted; finished runs are kept, rerun to resume", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
