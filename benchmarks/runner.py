"""``run(cfg) -> RunResult``: one configuration end to end, with no tracking (pure).

Stages: load data -> build model -> FP pretraining (cached by its key, so every method of a suite
starts from the same checkpoint) -> quantization-aware training with the method's hooks ->
selection on validation -> test evaluation -> metrics -> coding: encode to a bitstream, decode,
check the weights are bit-identical and re-evaluate the decoded model.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.config import RunConfig, pretrain_key, run_key
from benchmarks.data import DATASETS, DataSplits
from benchmarks.data.common import save_atomic
from benchmarks.models import MODELS
from benchmarks.storelock import file_lock
from benchmarks.train import EpochCallback, evaluate, fit, resolve_device, seed_everything
from ecqx import METHODS, QuantizedModel, bit_width, model_metrics

Log = Callable[[str], None]


@dataclass
class RunResult:
    """Everything a run produced. Metric values are fractions (accuracy, mAP); sizes in bytes."""

    config: RunConfig
    run_key: str
    data_fingerprint: str
    metric: str  # "accuracy" or "map"
    fp_val: float
    fp_test: float
    val: float
    test: float
    best_epoch: int
    summary: dict[str, float]  # ModelMetrics.summary() + coding numbers
    layers: list[dict[str, Any]]
    history: list[dict[str, float]]
    quantized: QuantizedModel
    bitstream: bytes = b""
    coding: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)  # per-class AP, layer stats ...

    @property
    def bits(self) -> int:
        """The method's bit width b (32 for unquantized survivors)."""
        return bit_width(self.config.params)

    def to_json(self) -> dict[str, Any]:
        """The flat result record written by ``--json`` (metric names follow the task)."""
        m = self.metric
        key = "accuracy" if m == "accuracy" else "map"
        out = {
            "suite": self.config.suite,
            "dataset": self.config.data.name,
            "model": self.config.model.name,
            "method": self.config.method,
            "bits": self.bits,
            "seed": self.config.seed,
            "params": dataclasses.asdict(self.config.params),
            "run_key": self.run_key,
            f"fp_test_{key}": self.fp_test,
            f"test_{key}": self.test,
            f"val_{key}": self.val,
            "best_epoch": self.best_epoch,
        }
        out.update(self.summary)
        out["history"] = self.history
        out["roundtrip_ok"] = bool(self.coding.get("roundtrip_ok", False))
        if "decoded_test" in self.coding:
            out[f"decoded_test_{key}"] = self.coding["decoded_test"]
        return out


def load_data(cfg: RunConfig, data_dir: Path | None, cache_dir: Path) -> DataSplits:
    options = dict(cfg.data.options)
    if cfg.data.name == "gsc":
        options.setdefault("cache_dir", str(cache_dir / "gsc"))
    return DATASETS.get(cfg.data.name)(
        data_dir, seed=cfg.seed, download=cfg.data.download, limit=cfg.data.limit, **options
    )


def build_model(cfg: RunConfig, data: DataSplits) -> torch.nn.Module:
    return MODELS.get(cfg.model.name)(data.num_classes, data.input_shape, **cfg.model.options)


def pretrained_model(
    cfg, data, device, cache_dir: Path, log: Log, on_epoch: EpochCallback | None, *, say_cached: bool = True
):
    """The FP model after the pretraining stage, from the checkpoint cache or trained now
    (``say_cached``: log a line when it came from the cache). Returns (model, {"fp_val", "fp_test",
    "checkpoint"})."""
    key = pretrain_key(cfg, data.fingerprint)
    path = cache_dir / "checkpoints" / f"{key}.pt"
    seed_everything(cfg.seed)
    model = build_model(cfg, data).to(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock")):  # one process trains it, the others then load it
        if path.is_file() and (info := _load_checkpoint(model, path, device, log)) is not None:
            if say_cached:
                log(f"  FP checkpoint {key} (cached)")
            return model, info
        return model, _pretrain(model, cfg, data, device, path, log, on_epoch)


def _pretrain(model, cfg: RunConfig, data: DataSplits, device, path: Path, log: Log, on_epoch) -> dict[str, Any]:
    """Train the FP stage of ``model`` and save its checkpoint at ``path``; returns its info."""
    log(f"  FP pretraining {cfg.model.name} for {cfg.pretrain.epochs} epochs (checkpoint {path.stem})")
    res = fit(
        model,
        data,
        cfg.pretrain,
        device=device,
        seed=cfg.seed,
        stage="pretrain",
        eval_batch_size=cfg.eval_batch_size,
        on_epoch=on_epoch,
    )
    model.load_state_dict(res.best)
    test = evaluate(model, data.test, data.multilabel, cfg.eval_batch_size, device)[data.task_metric]
    info = {"fp_val": res.best_val, "fp_test": test, "checkpoint": path.stem, "history": res.history}
    info = json.loads(json.dumps(info, default=float))  # plain types only: loadable with weights_only=True
    save_atomic({"state_dict": model.state_dict(), "info": info}, path)
    return info


def _load_checkpoint(model: torch.nn.Module, path: Path, device, log: Log) -> dict[str, Any] | None:
    """Load a cached FP checkpoint into ``model`` and return its info; None (the file removed, one
    line logged) when it is truncated, corrupt, not tensors and plain types only (a planted pickle is
    refused by ``weights_only=True`` before any of its code runs) or does not fit the model."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["state_dict"])
        info = ckpt["info"]
        if not isinstance(info, dict) or not {"fp_val", "fp_test"} <= set(info):
            raise ValueError("no FP metrics")
        return info
    except Exception as e:  # torch raises several types (UnpicklingError, RuntimeError, EOFError, ...)
        reason = (str(e).strip().splitlines() or [""])[0][:160]
        log(f"  FP checkpoint {path} is unusable ({type(e).__name__}: {reason}); removed, training it again")
        path.unlink(missing_ok=True)
        return None


def verify_coding(qm: QuantizedModel, cfg: RunConfig, data: DataSplits, device, test_metric: float) -> dict[str, Any]:
    """Encode ``qm``, decode the bitstream, compare bit for bit and re-evaluate the decoded model.
    Returns sizes (bytes), times (seconds), ``roundtrip_ok`` and, on a mismatch, ``error``."""
    from ecqx.coding import baseline_sizes, decode, encode

    enc = encode(qm)
    t0 = time.perf_counter()
    decoded = decode(enc.bitstream)
    decode_seconds = time.perf_counter() - t0
    problems = compare_models(qm, decoded)
    model = build_model(cfg, data).to(device)
    model.load_state_dict(decoded.state_dict())
    decoded_test = evaluate(model, data.test, data.multilabel, cfg.eval_batch_size, device)[data.task_metric]
    if decoded_test != test_metric:
        problems.append(f"decoded model scores {decoded_test} on test, the trained one {test_metric}")
    out = {
        "coded_bytes": enc.total_bytes,
        "coded_weight_bytes": enc.weight_bytes,
        "coded_other_bytes": enc.float_bytes,
        "coded_side_bytes": enc.side_bytes,
        "encode_seconds": enc.encode_seconds,
        "decode_seconds": decode_seconds,
        "decoded_test": decoded_test,
        "roundtrip_ok": not problems,
        "codec": enc.codec,
        "bitstream": enc.bitstream,
        "layer_bytes": enc.layer_bytes,
    }
    out.update(baseline_sizes(qm))
    if problems:
        out["error"] = "; ".join(problems)
    return out


def compare_models(a: QuantizedModel, b: QuantizedModel) -> list[str]:
    """Differences between two compressed models (empty when bit-identical)."""
    problems = []
    if list(a.quantized) != list(b.quantized) or a.targets != b.targets:
        problems.append("layer names differ")
    for name, layer in a.quantized.items():
        other = b.quantized.get(name)
        if other is None or not torch.equal(layer.levels, other.levels) or layer.step != other.step:
            problems.append(f"quantized layer {name} differs")
    for name, t in a.float_params.items():
        other = b.float_params.get(name)
        if other is None or other.dtype != t.dtype or not torch.equal(t, other):
            problems.append(f"parameter {name} differs")
    return problems


def run(
    cfg: RunConfig,
    *,
    data_dir: Path | None = None,
    cache_dir: Path = Path("runs/cache"),
    on_epoch: EpochCallback | None = None,
    log: Log = print,
    data: DataSplits | None = None,
    key: str | None = None,
) -> RunResult:
    """Run one resolved configuration end to end; see the module docstring. ``data`` and ``key`` may
    be passed when the caller already loaded the data and computed the run key."""
    device = resolve_device(cfg.device)
    data = data if data is not None else load_data(cfg, data_dir, cache_dir)
    key = key or run_key(cfg, data.fingerprint)
    model, fp = pretrained_model(cfg, data, device, cache_dir, log, on_epoch)
    seed_everything(cfg.seed)
    method = METHODS.get(cfg.method)(cfg.params)
    t0 = time.perf_counter()
    res = fit(
        model,
        data,
        cfg.train,
        device=device,
        seed=cfg.seed,
        method=method,
        stage="train",
        eval_batch_size=cfg.eval_batch_size,
        on_epoch=on_epoch,
        measure=EpochMeasures(model, method, data, cfg.eval_batch_size, device),
    )
    train_seconds = time.perf_counter() - t0
    qm: QuantizedModel = res.best
    model.load_state_dict(qm.state_dict())
    test_all = evaluate(model, data.test, data.multilabel, cfg.eval_batch_size, device)
    metrics = model_metrics(qm)
    summary = dict(metrics.summary(), train_seconds=train_seconds)
    coding: dict[str, Any] = {}
    if cfg.verify_coding:
        coding = verify_coding(qm, cfg, data, device, test_all[data.task_metric])
        summary.update(coding_summary(coding, qm, metrics))
    return RunResult(
        config=cfg,
        run_key=key,
        data_fingerprint=data.fingerprint,
        metric=data.task_metric,
        fp_val=fp["fp_val"],
        fp_test=fp["fp_test"],
        val=res.best_val,
        test=test_all[data.task_metric],
        best_epoch=res.best_epoch,
        summary=summary,
        layers=[vars(m) | method.layer_stats.get(m.name, {}) for m in metrics.layers],
        history=res.history,
        quantized=qm,
        bitstream=coding.pop("bitstream", b""),
        coding=coding,
        tags={"device": str(device), "pretrained": str(getattr(model, "pretrained_source", "scratch"))},
        extras={"per_class_ap": test_all["per_class_ap"]} if "per_class_ap" in test_all else {},
    )


class EpochMeasures:
    """What a QAT epoch's history row records beside the loss and the validation metric: the test
    metric (never used for selection), the sparsity of the compressed weights overall and per layer
    (fractions of exact zeros) and, per layer, the share of the weights that were zero at the end of
    the previous epoch and are non-zero now (``layer_revived``: how freely pruning is undone)."""

    def __init__(self, model: torch.nn.Module, method, data: DataSplits, batch_size: int, device) -> None:
        self.model, self.method, self.data, self.batch_size, self.device = model, method, data, batch_size, device
        self.previous: dict[str, torch.Tensor] = {}

    def __call__(self) -> dict[str, Any]:
        masks = {name: m.weight.detach() == 0 for name, m in self.method.layers.items()}
        zeros = {name: int(z.sum()) for name, z in masks.items()}
        sizes = {name: z.numel() for name, z in masks.items()}
        test = evaluate(self.model, self.data.test, self.data.multilabel, self.batch_size, self.device)
        row = {
            f"test_{self.data.task_metric}": test[self.data.task_metric],
            "sparsity": sum(zeros.values()) / max(sum(sizes.values()), 1),
            "layer_sparsity": {name: zeros[name] / max(sizes[name], 1) for name in zeros},
        }
        if self.previous:
            row["layer_revived"] = {
                name: int((self.previous[name] & ~z).sum()) / max(int(self.previous[name].sum()), 1)
                for name, z in masks.items()
            }
        self.previous = masks
        return row


def coding_summary(coding: dict[str, Any], qm: QuantizedModel, metrics) -> dict[str, float]:
    """The coding numbers of a run's summary: sizes (bytes), times (s), the compression ratio
    (FP32 bytes / coded bytes) and coded bits per compressed weight."""
    out = {k: v for k, v in coding.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    out["compression_ratio"] = metrics.fp32_bytes / coding["coded_bytes"]
    target_bytes = sum(coding["layer_bytes"].get(name, 0) for name in qm.targets)
    out["coded_bits_per_weight"] = 8 * target_bytes / max(metrics.target_params, 1)
    return out
