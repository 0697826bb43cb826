"""``ecqx-bench suite S --estimate``: the expected wall time of a suite on this device, before it starts.

For every (model, method) pair of the suite's grid, a few real training steps are timed after a
warm-up (the FP pretraining step too), with the suite's optimizer, batch size and the first
parameter setting of the method; an evaluation batch gives the per-example evaluation time, and one
encode + decode the coding check. These are multiplied by the suite's counts:

    FP stage   per pretraining group (model x seed): pretrain.epochs x batches steps, one validation
               pass per epoch and a test pass;
    QAT run    per grid run: train.epochs x batches steps with the method's hooks, validation + test
               passes at epoch 0 and after every epoch, a final and a decoded test pass, one coding check.

Workers: the FP stage runs first in one process (``benchmarks.gridgate``), then the runs are spread
over K workers; the makespan is that of longest-first scheduling with each worker as fast as the
measured process (true with one device per worker; workers sharing CPU cores share their speed).

Nothing is tracked: no MLflow run, no checkpoint, no data cache in ``runs/`` (a data set that needs
a feature cache builds it in a temporary folder). Without the data on disk, synthetic batches of the
suite's shapes stand in, with the full data sets' split sizes (:data:`FULL_SPLITS`).
"""

from __future__ import annotations

import heapq
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from benchmarks.config import RunConfig
from benchmarks.data import DatasetError, DataSplits
from benchmarks.models import MODELS
from benchmarks.train import loader, loss_fn, make_optimizer, param_groups, resolve_device, seed_everything
from ecqx import METHODS

WARMUP_STEPS = 2  # untimed steps first (allocations, optimizer state, the first LRP pass)
TIMED_STEPS = 3  # timed steps per (model, method) at least, and at least one relevance cycle for ECQx
MIN_TIMED_SECONDS = 1.0  # ... and more steps (up to MAX_TIMED_STEPS) until this long has been timed
MAX_TIMED_STEPS = 200
FULL_SPLITS = {  # data set: (train, val, test) examples of the full split the loader makes, input, classes, multi-label
    "cifar10": ((45_000, 5_000, 10_000), (3, 32, 32), 10, False),  # 50k train minus a 5k val, 10k test
    "gsc": ((36_923, 4_445, 4_890), (490,), 12, False),  # v0.02 lists, +10 % unknown +10 % silence
    "voc": ((5_145, 572, 5_823), None, 20, True),  # train.txt minus 10 % val; test = val.txt (image_size)
}


@dataclass
class PairCost:
    """Measured seconds of one (model, method) pair and the suite's counts for it."""

    model: str
    method: str
    runs: int  # grid runs of this pair
    step: float  # seconds per training step with the method's hooks
    eval_example: float  # seconds per evaluated example
    coding: float  # seconds of one encode + decode
    steps: int  # training steps per run
    evals: int  # evaluated examples per run

    @property
    def run_seconds(self) -> float:
        return self.steps * self.step + self.evals * self.eval_example + self.coding


def train_step(model, opt, criterion, method, batch) -> None:
    """One training step as ``benchmarks.train.fit`` takes it (the timed unit)."""
    x, y = batch
    opt.zero_grad(set_to_none=True)
    criterion(model(x), y).backward()
    opt.step()
    if method is not None:
        method.after_step(model, (x, y))


def synthetic_splits(cfg: RunConfig) -> DataSplits:
    """Random examples of the data set's shapes, a few batches' worth (split sizes: FULL_SPLITS)."""
    _, shape, classes, multilabel = FULL_SPLITS[cfg.data.name]
    if shape is None:
        size = int(cfg.data.options.get("image_size", 224))
        shape = (3, size, size)
    n = 2 * max(cfg.pretrain.batch_size, cfg.train.batch_size)
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(n, *shape, generator=g)
    if multilabel:
        y = (torch.rand(n, classes, generator=g) < 0.1).float()
    else:
        y = torch.randint(0, classes, (n,), generator=g)
    part = TensorDataset(x, y)
    return DataSplits(part, part, part, classes, tuple(shape), multilabel, "synthetic")


def load_or_synthetic(cfg: RunConfig, data_dir: Path | None, cache: Path) -> tuple[DataSplits, tuple, bool]:
    """(splits to draw batches from, (train, val, test) sizes, whether synthetic)."""
    from benchmarks.runner import load_data

    if data_dir is not None or cfg.data.name not in FULL_SPLITS:
        try:
            data = load_data(cfg, data_dir, cache)
            return data, (len(data.train), len(data.val), len(data.test)), False
        except DatasetError:
            if cfg.data.name not in FULL_SPLITS:
                raise
    sizes = FULL_SPLITS[cfg.data.name][0]
    if cfg.data.limit:
        sizes = tuple(min(s, cfg.data.limit) for s in sizes)
    return synthetic_splits(cfg), sizes, True


def _batches(data: DataSplits, batch_size: int, device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches, loading included (cycling over the split)."""
    while True:
        for x, y in loader(data.train, batch_size, shuffle=True):
            yield x.to(device), y.to(device)


def time_steps(cfg: RunConfig, data: DataSplits, method_name: str | None, device) -> tuple[float, object, object]:
    """(seconds per training step after WARMUP_STEPS, model, method) of the FP stage (``method_name``
    None) or of a method's QAT stage."""
    seed_everything(cfg.seed)
    model = MODELS.get(cfg.model.name)(data.num_classes, data.input_shape, **cfg.model.options).to(device)
    opt_cfg = cfg.pretrain if method_name is None else cfg.train
    opt = make_optimizer(param_groups(model, opt_cfg), opt_cfg)
    method = None if method_name is None else METHODS.get(method_name)(cfg.params)
    if method is not None:
        method.prepare(model, total_steps=1000, optimizer=opt)
    model.train()
    criterion = loss_fn(data.multilabel)
    batches = _batches(data, opt_cfg.batch_size, device)
    cycle = getattr(cfg.params, "relevance_every", 1) if method is not None else 1
    for _ in range(WARMUP_STEPS):
        train_step(model, opt, criterion, method, next(batches))
    n, t0 = 0, time.perf_counter()
    while n < max(TIMED_STEPS, cycle) or (time.perf_counter() - t0 < MIN_TIMED_SECONDS and n < MAX_TIMED_STEPS):
        for _ in range(cycle):  # whole relevance cycles
            train_step(model, opt, criterion, method, next(batches))
        n += cycle
        _sync(device)
    return (time.perf_counter() - t0) / n, model, method


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_eval(model, data: DataSplits, batch_size: int, device) -> float:
    """Seconds per evaluated example (one warm-up batch, then one timed batch)."""
    x = next(iter(loader(data.val, batch_size, shuffle=False)))[0].to(device)
    model.eval()
    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        model(x).float().cpu()
        _sync(device)
    model.train()
    return (time.perf_counter() - t0) / len(x)


def time_coding(method, model) -> float:
    """Seconds of one encode + decode of the method's compressed model."""
    from ecqx.coding import decode, encode

    t0 = time.perf_counter()
    decode(encode(method.finalize(model)).bitstream)
    return time.perf_counter() - t0


def estimate(cfgs: list[RunConfig], data_dir: Path | None, log: Callable[[str], None] = print) -> dict:
    """Measured costs of every (model, method) pair of ``cfgs`` and the FP stage; see the module docstring."""
    pairs: dict[tuple[str, str], list[RunConfig]] = {}
    for cfg in cfgs:
        pairs.setdefault((cfg.model.name, cfg.method), []).append(cfg)
    fp_groups = {(c.model.name, c.seed, repr(c.pretrain), repr(c.data)) for c in cfgs}
    costs, fp, synthetic, loaded = [], {}, set(), {}
    with tempfile.TemporaryDirectory(prefix="ecqx-estimate-") as cache:
        for (model_name, method_name), group in pairs.items():
            cfg = group[0]
            device = resolve_device(cfg.device)
            key = repr(cfg.data)
            if key not in loaded:
                loaded[key] = load_or_synthetic(cfg, data_dir, Path(cache))
            data, (n_train, n_val, n_test), fake = loaded[key]
            if fake:
                synthetic.add(cfg.data.name)
            if model_name not in fp:
                step, model, _ = time_steps(cfg, data, None, device)
                per_example = time_eval(model, data, cfg.eval_batch_size, device)
                steps = cfg.pretrain.epochs * math.ceil(n_train / cfg.pretrain.batch_size)
                evals = cfg.pretrain.epochs * n_val + n_test
                fp[model_name] = PairCost(model_name, "fp", 0, step, per_example, 0.0, steps, evals)
                log(f"  {model_name} fp: {step * 1e3:.1f} ms/step, {per_example * 1e6:.0f} us/eval example")
            step, model, method = time_steps(cfg, data, method_name, device)
            coding = time_coding(method, model) if cfg.verify_coding else 0.0
            steps = cfg.train.epochs * math.ceil(n_train / cfg.train.batch_size)
            evals = (cfg.train.epochs + 1) * (n_val + n_test) + 2 * n_test
            per_example = fp[model_name].eval_example
            costs.append(PairCost(model_name, method_name, len(group), step, per_example, coding, steps, evals))
            log(f"  {model_name} {method_name}: {step * 1e3:.1f} ms/step ({step / fp[model_name].step:.2f}x FP)")
    for c in fp.values():
        c.runs = sum(1 for g in fp_groups if g[0] == c.model)
    return {"fp": list(fp.values()), "qat": costs, "synthetic": sorted(synthetic), "device": str(device)}


def makespan(durations: list[float], workers: int) -> float:
    """Wall time of longest-first scheduling of ``durations`` (seconds) on ``workers`` workers."""
    load = [0.0] * workers
    heapq.heapify(load)
    for d in sorted(durations, reverse=True):
        heapq.heappush(load, heapq.heappop(load) + d)
    return max(load) if durations else 0.0


def human(seconds: float) -> str:
    """Seconds as s / min / h / days."""
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def report(result: dict, suite: str, workers: int) -> str:
    """The estimate as text: per pair, the FP stage, and the total per worker count 1..workers."""
    fp_total = sum(c.runs * c.run_seconds for c in result["fp"])
    runs = [c.run_seconds for c in result["qat"] for _ in range(c.runs)]
    threads = torch.get_num_threads()
    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [
        f"estimate for suite {suite} on {result['device']} ({threads} threads); no run was created",
        f"  load average (1/5/15 min) {load}: other processes on this machine slow the timed steps",
    ]
    if result["synthetic"]:
        lines.append(
            f"  no data on disk for {', '.join(result['synthetic'])}: synthetic batches of the suite's shapes, "
            "full split sizes (data loading not timed)"
        )
    lines += [
        "  | model | method | runs | ms/step | × FP | steps/run | eval s/run | coding s | per run | all runs |",
        "  |---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result["fp"]:
        lines.append(
            f"  | {c.model} | FP stage | {c.runs} | {c.step * 1e3:.1f} | 1.00 | {c.steps:,} | "
            f"{c.evals * c.eval_example:.0f} | - | {human(c.run_seconds)} | {human(c.runs * c.run_seconds)} |"
        )
    fp_step = {c.model: c.step for c in result["fp"]}
    for c in result["qat"]:
        lines.append(
            f"  | {c.model} | {c.method} | {c.runs} | {c.step * 1e3:.1f} | {c.step / fp_step[c.model]:.2f} | "
            f"{c.steps:,} | {c.evals * c.eval_example:.0f} | {c.coding:.1f} | {human(c.run_seconds)} | "
            f"{human(c.runs * c.run_seconds)} |"
        )
    lines.append(f"  FP stage (one process): {human(fp_total)}; QAT runs: {len(runs)}, {human(sum(runs))} of work")
    for k in range(1, workers + 1):
        lines.append(f"  total with {k} worker(s): {human(fp_total + makespan(runs, k))}")
    return "\n".join(lines)
