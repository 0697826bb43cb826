"""``make perf``: speed and memory of the compression hot paths, in one process and one run.

    python -m benchmarks.perf [--device cpu,cuda] [--models vgg16_cifar,mlp_gsc] [--threads N] [--quick]

Models from ``benchmarks.models`` (He-initialised weights, random data of the paper's shapes:
VGG16-CIFAR at batch 64 on 3x32x32, MLP_GSC at batch 256 on 490 features), SGD with momentum 0.9,
4-bit methods. Three measurements per device (CPU always, CUDA when present), each after warm-up,
as medians of repeated runs:

1. assignment: ``method.compress`` (every layer: histogram, λ, costs, β, indices) for ECQ and
   ECQx (relevances from one real LRP pass on a random batch) at 2 and 4 bit; seconds and weights/s.
2. training step: zero_grad + forward + backward + optimizer.step + ``method.after_step`` for FP,
   uniform QAT, magnitude pruning, ECQ, ECQx (relevance every step) and ECQx (relevance every 8th
   step, mean over 8 consecutive steps), both also with the fidelity profile (``profile=reference``:
   rows ecqx_ref, ecqx_k8_ref, judged against the clean rows) and with LRP on sub-batches of 16
   (ecqx_chunk16; its effect on the relevances is reported), and ECQx's LRP pass alone (lrp_pass:
   one batch's relevances folded into the EMA as ECQx does, no training step), as a ratio to the FP
   step of the same run.
   Methods are timed round-robin so that background load hits all of them alike. The report derives
   from these rows the floor under ECQx's step (FP step + LRP pass share + assignment).
3. peak memory of a step relative to the FP step: each (model, method) runs in a fresh subprocess.
   CPU: peak resident set (VmHWM, reset through /proc/self/clear_refs just before the timed steps)
   minus the resident set after imports, with glibc's mmap threshold pinned
   (MALLOC_MMAP_THRESHOLD_) so that freed tensors leave the resident set at once. CUDA:
   ``torch.cuda.max_memory_allocated`` over the steps minus the allocation before the model exists.
   Both include what a method keeps (latent copies, indices, relevances) and its transients.

Writes ``results/perf/perf.json`` and ``results/perf/perf.md`` (with the command, git commit, thread
count and the load average at start and end: other processes on the machine slow multi-threaded
CPU kernels a lot, so compare ratios from the same run only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import baselines  # noqa: F401  (registers the comparison methods in ecqx.METHODS)
from benchmarks.models import MODELS
from benchmarks.perf_report import GOALS, markdown
from benchmarks.provenance import commit_text
from ecqx import METHODS, build_config
from ecqx.layers import select_layers

OUT_DIR = Path("results/perf")
MODEL_SPECS = {  # name: (num_classes, input_shape, batch size)
    "vgg16_cifar": (10, (3, 32, 32), 64),
    "mlp_gsc": (12, (490,), 256),
}
STEP_METHODS = {  # label: (registry name, config values)
    "fp": (None, {}),
    "uniform_qat": ("uniform_qat", {"bits": 4}),
    "magnitude": ("magnitude", {"target_sparsity": 0.9}),
    "ecq": ("ecq", {"bits": 4}),
    "ecqx": ("ecqx", {"bits": 4, "relevance_every": 1}),
    "ecqx_k8": ("ecqx", {"bits": 4, "relevance_every": 8}),
    "ecqx_ref": ("ecqx", {"bits": 4, "relevance_every": 1, "profile": "reference"}),  # the fidelity profile
    "ecqx_k8_ref": ("ecqx", {"bits": 4, "relevance_every": 8, "profile": "reference"}),
    "ecqx_chunk16": ("ecqx", {"bits": 4, "relevance_every": 1, "relevance_chunk": 16}),  # LRP on sub-batches
    "lrp_pass": ("ecqx", {"bits": 4}),  # ECQx's LRP pass alone (no training step): what bounds ECQx
}
LRP_PASS = "lrp_pass"
CHUNK = 16  # examples per LRP sub-batch of the ecqx_chunk16 rows
TOTAL_STEPS = 100_000  # schedule length given to prepare (magnitude pruning ramps over it)
_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {msg}", flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_model(name: str, device: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    classes, shape, _ = MODEL_SPECS[name]
    return MODELS.get(name)(classes, shape).to(device)


def random_batch(name: str, device: str, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    classes, shape, batch = MODEL_SPECS[name]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, generator=g).to(device), torch.randint(0, classes, (batch,), generator=g).to(
        device
    )


def make_method(method: str | None, values: dict):
    if method is None:
        return None
    cls = METHODS.get(method)
    return cls(build_config(cls.Config, values))


def make_stepper(model_name: str, label: str, device: str) -> Callable[[], None]:
    """A closure running one training step of ``label`` on its own model, optimizer and batch."""
    model = build_model(model_name, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = random_batch(model_name, device)
    method = make_method(*STEP_METHODS[label])
    if label == LRP_PASS:  # one batch's relevances into the EMA, as ECQx's update (BatchNorm statistics first)
        engine, layers = method.relevance_engine(model), select_layers(model)
        model(batch[0])
        return lambda: engine(model, batch[0], batch[1], layers, fold=method.fold_relevance)
    if method is not None:
        method.prepare(model, total_steps=TOTAL_STEPS, optimizer=opt)  # the reference STE keeps its own
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch[0]), batch[1]).backward()
        opt.step()
        if method is not None:
            method.after_step(model, batch)

    return step


def timed(fn: Callable[[], None], device: str, n: int = 1) -> float:
    """Mean seconds of ``n`` consecutive calls."""
    sync(device)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t) / n


# -- 1. assignment ---------------------------------------------------------------------------
def bench_assignment(model_name: str, device: str, bits: int, repeats: int) -> list[dict]:
    batch = random_batch(model_name, device)
    rows = []
    for label, relevance in (("ecq", False), ("ecqx", True)):
        model = build_model(model_name, device)  # fresh He-initialised weights for each method
        method = make_method("ecqx", {"bits": bits, "relevance": relevance})
        method.prepare(model)  # includes a first assignment (warm-up)
        if relevance:
            method.update_relevance(model, batch)  # real LRP relevances of the quantized model
        method.compress(model, None)  # second warm-up, with relevance
        times = [timed(lambda m=method, x=model: m.compress(x, None), device) for _ in range(repeats)]
        n = sum(w.numel() for w in method.latent.values())
        sec = statistics.median(times)
        rows.append(
            {
                "model": model_name,
                "device": device,
                "bits": bits,
                "method": label,
                "weights": n,
                "seconds": sec,
                "weights_per_second": n / sec,
                "times": times,
            }
        )
        log(f"assign {model_name} {device} {bits}-bit {label}: {sec:.3f} s ({n / sec / 1e6:.1f} M weights/s)")
    return rows


# -- 2. training steps -----------------------------------------------------------------------
def bench_steps(model_name: str, device: str, rounds: int, block: int) -> list[dict]:
    steppers = {}
    for label in STEP_METHODS:
        steppers[label] = make_stepper(model_name, label, device)
        n = 8 if "_k8" in label else block
        timed(steppers[label], device, n)  # warm-up
    samples: dict[str, list[float]] = {label: [] for label in steppers}
    for r in range(rounds):
        for label, step in steppers.items():
            samples[label].append(timed(step, device, 8 if "_k8" in label else block))
        log(
            f"steps {model_name} {device} round {r + 1}/{rounds}: "
            + ", ".join(f"{k} {v[-1] * 1e3:.0f} ms" for k, v in samples.items())
        )
    fp = statistics.median(samples["fp"])
    return [
        {
            "model": model_name,
            "device": device,
            "method": label,
            "seconds": statistics.median(v),
            "ratio_to_fp": statistics.median(v) / fp,
            "times": v,
        }
        for label, v in samples.items()
    ]


def chunk_effect(model_name: str, device: str) -> dict:
    """How far LRP on sub-batches of CHUNK examples (``relevance_chunk``) moves the relevances of one
    batch: max over layers of max |R_chunked - R| / max |R|."""
    from ecqx.relevance import WeightRelevance

    model = build_model(model_name, device)
    x, y = random_batch(model_name, device)
    model(x)  # BatchNorm statistics
    engine = WeightRelevance("epsilon_plus_flat", getattr(model, "lrp_canonizer", "none"))
    layers = select_layers(model)
    whole, parts = engine(model, x, y, layers), engine.chunked(model, x, y, layers, CHUNK)
    worst = max(float((parts[n] - r).abs().max() / r.abs().max().clamp(min=1e-30)) for n, r in whole.items())
    log(f"chunked LRP {model_name} {device}: max relative change {worst:.2e}")
    return {"model": model_name, "device": device, "chunk": CHUNK, "max_relative_change": worst}


# -- 3. memory -------------------------------------------------------------------------------
def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_probe(model_name: str, label: str, device: str, steps: int) -> dict:
    """Runs in a fresh interpreter: bytes of peak memory of ``steps`` training steps."""
    import ecqx.relevance  # noqa: F401  (zennit too: imports count for no method)

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.init()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_kib("VmRSS") * 1024
    step = make_stepper(model_name, label, device)
    n = max(steps, 8) if "_k8" in label else steps
    timed(step, device, n)  # optimizer state, autograd buffers, first LRP pass
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    timed(step, device, n)
    peak = torch.cuda.max_memory_allocated() if cuda else _rss_kib("VmHWM") * 1024
    return {"model": model_name, "device": device, "method": label, "peak_bytes": peak - base}


def bench_memory(model_name: str, device: str, labels: list[str]) -> list[dict]:
    rows = []
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    for label in labels:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.perf",
            "--memory-probe",
            model_name,
            label,
            "--device",
            device,
            "--threads",
            str(torch.get_num_threads()),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        log(f"memory {model_name} {device} {label}: {rows[-1]['peak_bytes'] / 2**20:.0f} MiB")
    fp = next(r["peak_bytes"] for r in rows if r["method"] == "fp")
    for r in rows:
        r["ratio_to_fp"] = r["peak_bytes"] / fp
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.perf", description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="comma-separated devices (default: cpu, plus cuda if present)")
    p.add_argument("--models", default=",".join(MODEL_SPECS), help="comma-separated model names")
    p.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, not for the record)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=str(OUT_DIR), help="output folder")
    p.add_argument("--memory-probe", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(*args.memory_probe, args.device or "cpu", steps=3)))
        return None
    devices = args.device.split(",") if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    models = args.models.split(",")
    report = {
        "command": " ".join(["python -m benchmarks.perf", *(argv if argv is not None else sys.argv[1:])]),
        "commit": commit_text(),
        "load_average_start": os.getloadavg(),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "assignment": [],
        "steps": [],
        "memory": [],
        "chunk_effect": [],
        "goals": {":".join(k): v for k, v in GOALS.items()},
    }
    for device in devices:
        for model_name in models:
            big = model_name == "vgg16_cifar" and device == "cpu"
            for bits in (2, 4):
                report["assignment"] += bench_assignment(
                    model_name, device, bits, 2 if args.quick else (5 if big else 9)
                )
            rounds, block = (2, 1) if args.quick else ((5, 1) if big else (9, 8))
            report["steps"] += bench_steps(model_name, device, rounds, block)
            if not args.no_memory:
                report["memory"] += bench_memory(model_name, device, list(STEP_METHODS))
            report["chunk_effect"].append(chunk_effect(model_name, device))
    report["wall_seconds"] = time.perf_counter() - _T0
    report["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "perf.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report, __doc__)
    (out / "perf.md").write_text(text)
    print(text)
    log(f"wrote {out / 'perf.json'} and {out / 'perf.md'}")
    return report


if __name__ == "__main__":
    main()
