"""Running a suite's grid from its work queue (``benchmarks.gridqueue``): in this process, or in K
worker processes; other processes and machines on the same stores may pop the same queue.

Workers die with their parent (``PR_SET_PDEATHSIG``: even a SIGKILL of the parent kills them). A
SIGTERM or SIGINT to the parent stops the workers (their MLflow runs end KILLED, their trials FAIL
and are enqueued again by the next start) and ends with one summary line (``GridInterrupted``).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import gridqueue
from benchmarks.config import RunConfig, describe
from benchmarks.procs import SIGNAL_EXIT, GridInterrupted, raise_on_signals

Report = Callable[[int, int, RunConfig, dict[str, Any]], None]
STOP_S = 30.0  # seconds stopped workers get to close their runs before SIGKILL


def _job(index: int, cfg: RunConfig, data_dir: Path | None, tracking_uri: str | None) -> dict[str, Any]:
    from benchmarks.tracking import tracked_run

    return tracked_run(
        cfg,
        data_dir=data_dir,
        tracking_uri=tracking_uri,
        log=lambda line: print(f"  [{index}] {line.strip()}", flush=True),
    )


def _worker(parent: int, threads: int, plugins: list[str], payload: bytes) -> None:
    """A spawned worker: dies with ``parent``, imports the plugins, then works the queue."""
    from benchmarks.procs import die_with_parent

    die_with_parent(parent)
    raise_on_signals()
    import torch

    from benchmarks.suite import load_plugin

    torch.set_num_threads(threads)
    for entry in plugins:
        load_plugin(entry, Path("."))
    q, cfgs, data_dir, tracking_uri, report = pickle.loads(payload)  # after the plugins: their configs
    try:
        gridqueue.work(q, cfgs, lambda i, cfg: _job(i + 1, cfg, data_dir, tracking_uri), report)
    except KeyboardInterrupt:
        sys.exit(130)


def _stop(procs) -> None:
    """SIGTERM every live worker, wait up to ``STOP_S`` for all, then SIGKILL what is left."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + STOP_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(5)


def _run_workers(q, cfgs, workers, data_dir, tracking_uri, report, plugins) -> None:
    from multiprocessing import get_context

    threads = max(1, (os.cpu_count() or 1) // workers)
    payload = pickle.dumps((q, cfgs, data_dir, tracking_uri, report))
    ctx = get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(os.getpid(), threads, plugins, payload)) for _ in range(workers)]
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(0.5)
    finally:
        _stop(procs)


def run_grid(
    cfgs: list[RunConfig],
    *,
    workers: int = 1,
    data_dir: Path | None = None,
    tracking_uri: str | None = None,
    report: Report | None = None,
    plugins: list[str] | None = None,
    storage: str | None = None,
    name: str = "grid",
) -> list[dict[str, Any]]:
    """Run every config through the grid's queue in ``storage`` (default: ``runs/optuna.db``),
    resuming: finished run keys are skipped. ``report(done, total, cfg, record)`` (picklable when
    ``workers > 1``) is called as each run ends. Returns per config ``{"mlflow_run_id", "skipped"}``
    (empty for a point that did not finish). Raises GridInterrupted on SIGTERM/SIGINT."""
    from benchmarks.runs import experiment_name
    from benchmarks.storage import DEFAULT_STORAGE
    from benchmarks.tracking import close_orphans, setup

    q = gridqueue.queue_for(cfgs, storage or DEFAULT_STORAGE, name, tracking_uri)
    raise_on_signals()
    for suite in dict.fromkeys(c.suite for c in cfgs):
        close_orphans(setup(tracking_uri, experiment_name(suite)))  # runs of killed suites: KILLED
    gridqueue.open_queue(q, len(cfgs))
    try:
        if workers <= 1:
            gridqueue.work(q, cfgs, lambda i, cfg: _job(i + 1, cfg, data_dir, tracking_uri), report)
        else:
            _run_workers(q, cfgs, workers, data_dir, tracking_uri, report, plugins or [])
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        done, rest = gridqueue.progress(q, len(cfgs))
        line = (
            f"{name}: stopped by {signal.Signals(signum).name}; {len(done)} of {len(cfgs)} grid runs finished, "
            f"{len(rest)} will run when the same command is started again"
        )
        raise GridInterrupted(line, SIGNAL_EXIT.get(signum, 130)) from None
    return gridqueue.records(q, len(cfgs))


def report_run(workers: int, done: int, total: int, cfg: RunConfig, record: dict[str, Any]) -> None:
    """The suite's line per ended run (picklable through functools.partial)."""
    print(f"[{done}/{total}] done: {describe(cfg)}", flush=True)
    if not record.get("skipped"):
        print_record(record)


def print_record(r: dict[str, Any]) -> None:
    metric = "accuracy" if "test_accuracy" in r else "map"
    ratio = r.get("compression_ratio", r.get("compression_ratio_entropy"))
    print(
        f"{r['model']} {r['method']} b={r['bits']} seed={r['seed']}: test {metric} {100 * r[f'test_{metric}']:.2f}% "
        f"(FP {100 * r[f'fp_test_{metric}']:.2f}%), sparsity {100 * r['sparsity']:.1f}%, "
        f"{r['entropy_bits_per_weight']:.3f} bits/weight, {r.get('coded_bytes', r['entropy_bound_bytes']):.0f} bytes, "
        f"ratio {ratio:.1f}x, round trip {'ok' if r.get('roundtrip_ok') else 'NOT ok'}"
    )


def summary_line(name: str, records: list[dict[str, Any]], seconds: float) -> str:
    finished = [r for r in records if r]
    skipped = sum(bool(r.get("skipped")) for r in finished)
    missing = len(records) - len(finished)
    return (
        f"suite {name}: {len(records)} runs ({len(finished) - skipped} run now, {skipped} finished before"
        + (f", {missing} not finished: rerun to retry" if missing else "")
        + f") in {seconds / 60:.1f} min"
    )


def timed(fn: Callable[[], list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], float]:
    start = time.perf_counter()
    return fn(), time.perf_counter() - start
