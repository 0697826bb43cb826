"""The FP gate over a whole grid, before any method runs (``ecqx-bench suite``).

Every pretraining group of the grid (same model, data, pretraining and seed: one FP checkpoint) runs
its FP stage and the gate of ``benchmarks.fpgate`` first, in this process, so a weak FP model stops
the suite with one line before any MLflow run of a method exists, whatever the number of workers.
The checkpoints it trains are the cache the grid's runs then load. Groups whose runs all FINISHED
before are skipped (a resumed suite neither retrains nor re-judges them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from benchmarks.config import RunConfig, pretrain_key, run_key
from benchmarks.data import DataSplits
from benchmarks.fpgate import baseline_name, fp_stage
from benchmarks.runner import load_data
from benchmarks.runs import RUNS_DIR, experiment_name


def pretrain_groups(cfgs: list[RunConfig]) -> list[list[RunConfig]]:
    """The grid's configs grouped by what their FP stage depends on (model, data, pretraining, seed,
    evaluation batch), in grid order."""
    groups: dict[str, list[RunConfig]] = {}
    for cfg in cfgs:
        parts = [cfg.seed, cfg.model.name, repr(cfg.model.options), repr(cfg.data), repr(cfg.pretrain)]
        groups.setdefault(json.dumps([*parts, cfg.eval_batch_size]), []).append(cfg)
    return list(groups.values())


def check_grid_fp(
    cfgs: list[RunConfig],
    data_dir: Path | None,
    tracking_uri: str | None,
    cache_dir: Path = RUNS_DIR / "cache",
    log: Callable[[str], None] = print,
) -> None:
    """Run the FP stage and the gate of every pretraining group of ``cfgs`` that has an unfinished run;
    raises FpGateError (one line) at the first FP model that fails the gate with ``fp_gate`` on."""
    from benchmarks.tracking import find_runs, setup

    for group in pretrain_groups(cfgs):
        data: DataSplits = load_data(group[0], data_dir, cache_dir)
        exp = setup(tracking_uri, experiment_name(group[0].suite))
        cfg = next((c for c in group if not _finished(find_runs(exp, run_key(c, data.fingerprint), "FINISHED"))), None)
        if cfg is None:
            continue
        log(f"FP stage of {cfg.model.name} seed {cfg.seed} (checkpoint {pretrain_key(cfg, data.fingerprint)})")
        v = fp_stage(cfg, data, cache_dir, log)
        log(
            f"  FP gate {v.status}: val {v.metric} {100 * v.fp_val:.2f}% vs trivial baseline "
            f"({baseline_name(v.metric)}) {100 * v.trivial_val:.2f}% (needs {100 * v.margin:g}% of the gap to 100%)"
        )


def _finished(runs) -> bool:
    """A FINISHED grid run among ``runs`` (search trials, nested runs, never stand in for one)."""
    return any("mlflow.parentRunId" not in r.data.tags for r in runs)
