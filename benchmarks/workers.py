"""Running a suite's grid: serially or in K worker processes sharing one MLflow store.

Every (model, seed) group's FP checkpoint is trained once, by the group's first run, before the
other runs of the group start, so parallel workers never pretrain the same model twice.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks.config import RunConfig, describe, to_dict

Report = Callable[[int, int, RunConfig, dict[str, Any]], None]


def _pretrain_group(cfg: RunConfig) -> str:
    d = to_dict(cfg)
    return json.dumps({k: d[k] for k in ("seed", "data", "model", "pretrain")}, sort_keys=True, default=str)


def _init_worker(threads: int, plugins: list[str]) -> None:
    """Worker start: torch threads, and the suite's plugins (before any config is unpickled)."""
    import torch

    from benchmarks.suite import load_plugin

    torch.set_num_threads(threads)
    for entry in plugins:
        load_plugin(entry, Path("."))


def _job(index: int, cfg: RunConfig, data_dir: Path | None, tracking_uri: str | None) -> dict[str, Any]:
    from benchmarks.tracking import tracked_run

    return tracked_run(
        cfg,
        data_dir=data_dir,
        tracking_uri=tracking_uri,
        log=lambda line: print(f"  [{index}] {line.strip()}", flush=True),
    )


def _phases(cfgs: list[RunConfig]) -> tuple[list[int], list[int]]:
    """(indices of each pretrain group's first run, all other indices)."""
    seen: set[str] = set()
    first, rest = [], []
    for i, cfg in enumerate(cfgs):
        group = _pretrain_group(cfg)
        (rest if group in seen else first).append(i)
        seen.add(group)
    return first, rest


def run_grid(
    cfgs: list[RunConfig],
    *,
    workers: int = 1,
    data_dir: Path | None = None,
    tracking_uri: str | None = None,
    report: Report,
    plugins: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Run every config (resuming: finished run keys are skipped); ``report(done, total, cfg, record)``
    is called as each run ends. Returns the records in config order."""
    records: list[dict[str, Any]] = [{} for _ in cfgs]
    if workers <= 1:
        for i, cfg in enumerate(cfgs):
            print(f"[{i + 1}/{len(cfgs)}] {describe(cfg)}", flush=True)
            records[i] = _job(i + 1, cfg, data_dir, tracking_uri)
            report(i + 1, len(cfgs), cfg, records[i])
        return records
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = get_context("spawn")
    done = 0
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(threads, plugins or [])
    ) as pool:
        try:
            for phase in _phases(cfgs):
                futures: dict[Future, int] = {
                    pool.submit(_job, i + 1, cfgs[i], data_dir, tracking_uri): i for i in phase
                }
                while futures:
                    finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for f in finished:
                        i = futures.pop(f)
                        records[i] = f.result()
                        done += 1
                        report(done, len(cfgs), cfgs[i], records[i])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return records


def summary_line(name: str, records: list[dict[str, Any]], seconds: float) -> str:
    skipped = sum(bool(r.get("skipped")) for r in records)
    return (
        f"suite {name}: {len(records)} runs ({len(records) - skipped} run now, {skipped} finished before) "
        f"in {seconds / 60:.1f} min"
    )


def timed(fn: Callable[[], list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], float]:
    start = time.perf_counter()
    return fn(), time.perf_counter() - start
