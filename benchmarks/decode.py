"""Check a table cell from the file alone: decode a bitstream, rebuild the model, evaluate it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks.config import ConfigError, RunConfig, config_from_dict
from benchmarks.runner import build_model, load_data
from benchmarks.runs import download
from benchmarks.train import evaluate, resolve_device
from ecqx import model_metrics


def _from_run(run_id: str, tracking_uri: str | None, folder: Path) -> tuple[Path, Path]:
    """Download ``model.ecqx`` and ``config.yaml`` of an MLflow run into ``folder``."""
    return download(run_id, "model.ecqx", folder, tracking_uri), download(run_id, "config.yaml", folder, tracking_uri)


def decode_and_evaluate(
    source: str,
    *,
    config_path: Path | None = None,
    data_dir: Path | None = None,
    tracking_uri: str | None = None,
    cache_dir: Path = Path("runs/cache"),
) -> dict[str, Any]:
    """Decode ``source`` (a .ecqx file, or an MLflow run id) and evaluate the rebuilt model on the
    test split of the run's data set. Returns sizes (bytes), metrics and the test metric."""
    from ecqx.coding import decode

    path = Path(source)
    with tempfile.TemporaryDirectory() as tmp:
        if path.is_file():
            config_path = config_path or path.with_name("config.yaml")
            if not config_path.is_file():
                raise ConfigError(f"no config for {path}: pass --config (the run's config.yaml artifact)")
        else:
            path, config_path = _from_run(source, tracking_uri, Path(tmp))
        cfg: RunConfig = config_from_dict(_read_yaml(config_path))
        data_bytes = path.read_bytes()
    qm = decode(data_bytes)
    data = load_data(cfg, data_dir, cache_dir)
    device = resolve_device(cfg.device)
    model = build_model(cfg, data).to(device)
    model.load_state_dict(qm.state_dict())
    metric = evaluate(model, data.test, data.multilabel, cfg.eval_batch_size, device)[data.task_metric]
    m = model_metrics(qm)
    return {
        "source": source,
        "coded_bytes": len(data_bytes),
        "fp32_bytes": m.fp32_bytes,
        "compression_ratio": m.fp32_bytes / len(data_bytes),
        "sparsity": m.sparsity,
        f"test_{data.task_metric}": metric,
        "model": cfg.model.name,
        "method": cfg.method,
        "suite": cfg.suite,
    }


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not a readable run config ({e})") from None
