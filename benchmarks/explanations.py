"""Explanation drift of a run: LRP input maps of the FP checkpoint vs the compressed model decoded
from the run's bitstream (never the in-memory model), on a fixed, seeded subset of the test split.

Metrics (definitions and formulas in :mod:`ecqx.similarity`), logged with the run as MLflow metrics:
``expl_spearman``, ``expl_cosine``, ``expl_topk`` (top-10 % overlap) and ``expl_flip`` (share of
examples whose top-1 class changed); ``expl_examples`` and ``expl_pairs`` say how many examples and
(example, class) maps they average over. The artifact ``explanations.npz`` keeps the inputs and the
FP and compressed maps of the first ``GALLERY`` maps for the gallery figure.

``explain_suite`` adds them to the finished runs of an existing store that lack them
(``ecqx-bench explain SUITE``), once: no training, no new MLflow run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.config import RunConfig
from benchmarks.data import DataSplits
from benchmarks.runner import build_model, compare_models, load_data, pretrained_model
from benchmarks.runs import RUNS_DIR, _mlflow, connect, download, load_runs
from benchmarks.train import evaluate, resolve_device
from ecqx.attribution import explained_pairs, input_relevance, lrp_choice, top1
from ecqx.similarity import flip_share, map_similarity

EXAMPLES = 256  # test examples explained per run (the same subset for every run of a suite)
SUBSET_SEED = 0  # seed of that subset (independent of the run seed)
GALLERY = 6  # maps kept per run for the gallery figure (the subset's first maps)
METRICS = ("expl_spearman", "expl_cosine", "expl_topk", "expl_flip")
ARTIFACT = "explanations.npz"
Log = Callable[[str], None]


class ExplanationError(RuntimeError):
    """Explanation metrics cannot be computed faithfully for a run."""


class BitstreamError(ExplanationError):
    """The run's bitstream does not decode back to the model it claims (the run is rejected)."""


@dataclass
class Explanation:
    """The metrics of one run (fractions; ``metrics`` keys are the MLflow names) and the gallery
    arrays (inputs, FP maps, compressed maps, explained classes, input shape)."""

    metrics: dict[str, float]
    gallery: dict[str, np.ndarray]


def subset(test, n: int = EXAMPLES, seed: int = SUBSET_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of ``n`` test examples drawn without replacement with ``seed`` (all when
    the split is smaller), in increasing index order."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(test), generator=g)[: min(n, len(test))].sort().values
    items = [test[int(i)] for i in idx]
    x = torch.stack([torch.as_tensor(a) for a, _ in items])
    y = torch.stack([torch.as_tensor(b) for _, b in items])
    return x, y


def compare(fp: nn.Module, compressed: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Explanation:
    """The four metrics of ``compressed`` against ``fp`` on (x, y), both explained with the FP
    model's composite and canonizer (:func:`ecqx.attribution.lrp_choice`; the same model class)."""
    choice = lrp_choice(fp)
    a = input_relevance(fp, x, y, choice)
    b = input_relevance(compressed, x, y, choice)
    sim = map_similarity(a, b)
    metrics = {f"expl_{k}": v for k, v in sim.items()}
    metrics["expl_flip"] = flip_share(top1(fp, x), top1(compressed, x))
    metrics |= {"expl_examples": float(len(x)), "expl_pairs": float(len(a))}
    rows, classes = explained_pairs(y)
    k = min(GALLERY, len(a))
    gallery = {
        "inputs": x[rows[:k].to(x.device)].float().cpu().numpy(),
        "fp_maps": a[:k].cpu().numpy(),
        "maps": b[:k].cpu().numpy(),
        "classes": classes[:k].cpu().numpy(),
        "input_shape": np.asarray(x.shape[1:]),
    }
    return Explanation(metrics, gallery)


def decoded_model(bitstream: bytes, cfg: RunConfig, data: DataSplits, device, reference=None) -> nn.Module:
    """The model rebuilt from ``bitstream``; BitstreamError when it does not decode or (with the
    trained ``reference`` QuantizedModel) decodes to other weights."""
    from ecqx.coding import decode

    if not bitstream:
        raise BitstreamError("the run has no bitstream (coding off?): explanation metrics need the decoded model")
    try:
        qm = decode(bitstream)
    except Exception as e:  # the decoder raises several types for bad streams
        raise BitstreamError(f"the bitstream does not decode ({type(e).__name__}: {e})") from None
    problems = compare_models(reference, qm) if reference is not None else []
    if problems:
        raise BitstreamError("the bitstream decodes to another model: " + "; ".join(problems[:5]))
    model = build_model(cfg, data).to(device)
    model.load_state_dict(qm.state_dict())
    return model


def _fp_model(cfg: RunConfig, data: DataSplits, device, cache_dir: Path, log: Log, fp_test: float | None = None):
    """The run's FP checkpoint (from the cache; pretrained again from its seed when missing). With
    ``fp_test`` (the run's logged FP test metric) it must score exactly that (ExplanationError)."""
    model, info = pretrained_model(cfg, data, device, cache_dir, log, None)
    if fp_test is not None:
        score = evaluate(model, data.test, data.multilabel, cfg.eval_batch_size, device)[data.task_metric]
        if abs(score - fp_test) > 1e-9:
            raise ExplanationError(
                f"FP checkpoint {info['checkpoint']} scores test {data.task_metric} {score}, the run logged "
                f"{fp_test}: it is not the run's FP model; run explain where the suite's runs/cache is"
            )
    return model


def explain_result(result, data: DataSplits, cache_dir: Path, log: Log = print) -> Explanation:
    """The explanation metrics of a finished ``RunResult``: its bitstream decoded (and checked
    against the trained model) vs its FP checkpoint. BitstreamError when the round trip failed."""
    if "error" in result.coding:
        raise BitstreamError(f"bitstream round trip failed: {result.coding['error']}")
    cfg = result.config
    device = resolve_device(cfg.device)
    model = decoded_model(result.bitstream, cfg, data, device, result.quantized)
    x, y = subset(data.test)
    return compare(_fp_model(cfg, data, device, cache_dir, log), model, x.to(device), y.to(device))


def log_explanation(expl: Explanation, run_id: str | None = None) -> None:
    """Log the metrics and ``explanations.npz`` to the active MLflow run (or to ``run_id``)."""
    mlflow = _mlflow()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ARTIFACT
        with path.open("wb") as f:
            np.savez(f, **expl.gallery)
        if run_id is None:
            mlflow.log_metrics(expl.metrics)
            mlflow.log_artifact(str(path))
            return
        client = mlflow.MlflowClient()
        for k, v in expl.metrics.items():
            client.log_metric(run_id, k, v)
        client.log_artifact(run_id, str(path))


def read_gallery(run_id: str, tracking_uri: str | None = None) -> dict[str, np.ndarray] | None:
    """A run's ``explanations.npz`` arrays (None when the run has none)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = download(run_id, ARTIFACT, Path(tmp), tracking_uri)
        except Exception:  # runs logged before explanations
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}


# ------------------------------------------------------------------ an existing store


def _stored_run(run: Any, tracking_uri: str | None, data_dir: Path | None, cache_dir: Path, log: Log, data_cache):
    """Explanation of one stored run from its ``model.ecqx`` and ``config.yaml`` artifacts; the
    decoded model must score the run's logged test metric (else BitstreamError)."""
    from benchmarks.config import config_from_dict
    from benchmarks.decode import _read_yaml

    with tempfile.TemporaryDirectory() as tmp:
        bitstream = download(run["run_id"], "model.ecqx", Path(tmp), tracking_uri).read_bytes()
        cfg = config_from_dict(_read_yaml(download(run["run_id"], "config.yaml", Path(tmp), tracking_uri)))
    key = repr((cfg.data, cfg.seed))
    if key not in data_cache:
        data_cache[key] = load_data(cfg, data_dir, cache_dir)
    data = data_cache[key]
    device = resolve_device(cfg.device)
    model = decoded_model(bitstream, cfg, data, device)
    metric = data.task_metric
    score = evaluate(model, data.test, data.multilabel, cfg.eval_batch_size, device)[metric]
    logged = float(run[f"test_{metric}"])
    if abs(score - logged) > 1e-9:
        raise BitstreamError(
            f"run {run['run_id']}: decoded model scores test {metric} {score}, the run logged {logged}"
        )
    x, y = subset(data.test)
    fp = _fp_model(cfg, data, device, cache_dir, log, float(run[f"fp_test_{metric}"]))
    return compare(fp, model, x.to(device), y.to(device))


def explain_suite(
    suite: str,
    tracking_uri: str | None = None,
    *,
    data_dir: Path | None = None,
    cache_dir: Path = RUNS_DIR / "cache",
    log: Log = print,
) -> tuple[int, int]:
    """Add the explanation metrics to every verified run of ``suite`` (grid runs and search trials)
    that lacks them; returns (runs explained now, runs that had them)."""
    connect(tracking_uri)
    runs = load_runs(suite, tracking_uri, trials=True, coded=True)
    if runs.empty:
        return 0, 0
    todo = runs[runs["expl_spearman"].isna()] if "expl_spearman" in runs else runs
    data_cache: dict[str, DataSplits] = {}
    for i, (_, run) in enumerate(todo.iterrows()):
        expl = _stored_run(run, tracking_uri, data_dir, cache_dir, lambda line: None, data_cache)
        log_explanation(expl, run["run_id"])
        shown = ", ".join(f"{k} {expl.metrics[k]:.4f}" for k in METRICS)
        log(f"[{i + 1}/{len(todo)}] {run['model']} {run['method']} run {run['run_id']}: {shown}")
    return len(todo), len(runs) - len(todo)
