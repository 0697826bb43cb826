"""MLflow tracking of runs: tags, params, per-epoch metrics, final metrics and artifacts.

Default store: SQLite at ``runs/mlflow.db`` with artifacts under ``runs/artifacts`` (both
git-ignored); ``--tracking-uri`` takes a server (``http://...``) or another database URI. The run
key tag lets an interrupted suite resume: a key with a FINISHED run is skipped.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from benchmarks.config import RunConfig, run_key, to_dict
from benchmarks.explanations import METRICS, BitstreamError, explain_result, log_explanation
from benchmarks.fpgate import fp_stage, log_verdict
from benchmarks.procs import owner, owner_gone, raise_on_signals
from benchmarks.provenance import git_state, versions
from benchmarks.runner import RunResult, load_data, run
from benchmarks.runs import METHOD_PREFIX, RUNS_DIR, _mlflow, artifact_root, connect, experiment_name
from ecqx import bit_width

RESULT_ARTIFACT = "result.json"


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the MLflow 3 UI opens on the runs


def setup(tracking_uri: str | None, experiment: str) -> str:
    """Point MLflow at the store and return the experiment id (created with its artifacts beside a
    SQLite store, ``runs/artifacts`` by default: ``runs.artifact_root``; a server keeps its own;
    tagged as model training, so the MLflow UI opens it on its runs; safe when several processes race)."""
    mlflow = _mlflow()
    uri = connect(tracking_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is not None:
        if "mlflow.experimentKind" not in exp.tags:
            mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
        return exp.experiment_id
    try:
        return mlflow.create_experiment(experiment, artifact_location=artifact_root(uri), tags=EXPERIMENT_KIND)
    except mlflow.exceptions.MlflowException:  # another process created it first
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b": "value"} (MLflow params)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | dict | tuple) else str(v)
    return out


def find_runs(experiment_id: str, key: str, status: str | None = None):
    """MLflow runs with tag run_key == ``key`` (optionally only of ``status``)."""
    mlflow = _mlflow()
    filt = f"tags.run_key = '{key}'" + (f" and attributes.status = '{status}'" if status else "")
    return mlflow.search_runs([experiment_id], filter_string=filt, output_format="list")


def finished_record(experiment_id: str, key: str) -> dict[str, Any] | None:
    """The JSON record of a FINISHED run with this key, or None."""
    runs = [r for r in find_runs(experiment_id, key, "FINISHED") if "mlflow.parentRunId" not in r.data.tags]
    if not runs:  # search trials (nested runs) never stand in for a grid run
        return None
    mlflow = _mlflow()
    path = mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, artifact_path=RESULT_ARTIFACT)
    return json.loads(Path(path).read_text())


def close_stale(experiment_id: str, key: str) -> None:
    """Mark RUNNING runs of this key as KILLED (left by a killed process: the work queue hands a key
    to one live worker), except those whose owner still runs on this host."""
    client = _mlflow().MlflowClient()
    for r in find_runs(experiment_id, key, "RUNNING"):
        if not _owner_alive(r.data.tags):
            client.set_terminated(r.info.run_id, status="KILLED")


def _owner_alive(tags: dict[str, str]) -> bool:
    import socket

    return tags.get("owner_host") == socket.gethostname() and not owner_gone(tags)


def close_orphans(experiment_id: str, log: Callable[[str], None] = print) -> int:
    """Close as KILLED every RUNNING run of the experiment whose owner process (same host) is gone:
    runs of killed suites, search trials and study runs. Returns how many were closed."""
    client = _mlflow().MlflowClient()
    runs = _mlflow().search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", output_format="list")
    closed = [r for r in runs if owner_gone(r.data.tags)]
    for r in closed:
        client.set_terminated(r.info.run_id, status="KILLED")
    if closed:
        log(f"closed {len(closed)} run(s) left RUNNING by stopped processes as KILLED")
    return len(closed)


def mlflow_params(cfg: RunConfig) -> dict[str, str]:
    """The MLflow params of a run: every RunConfig field by its dotted key, the method's parameters
    as ``method.<field>`` (read back typed by ``runs.load_runs``)."""
    d = to_dict(cfg)
    params = d.pop("params")
    return {**flatten(d), **flatten(params, METHOD_PREFIX)}


def epoch_metrics(stage: str, row: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics of one epoch's history row: ``<stage>_<key>``; per-layer values (mappings) as
    ``<stage>_<key>.<layer>`` (e.g. ``train_layer_sparsity.3.weight``)."""
    out = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update({f"{stage}_{k}.{name}": float(x) for name, x in v.items()})
        elif k != "epoch":
            out[f"{stage}_{k}"] = float(v)
    return out


def run_tags(cfg: RunConfig, key: str) -> dict[str, str]:
    return {
        "run_key": key,
        "suite": cfg.suite,
        "method": cfg.method,
        "model": cfg.model.name,
        "dataset": cfg.data.name,
        "bits": str(bit_width(cfg.params)),
        "seed": str(cfg.seed),
        **git_state(),
        **versions(),
    }


def log_result(result: RunResult, mlflow_run_id: str) -> dict[str, Any]:
    """Final metrics, tags and artifacts of a finished run; returns its JSON record."""
    mlflow = _mlflow()
    record = dict(result.to_json(), mlflow_run_id=mlflow_run_id)
    numeric = {k: float(v) for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    numeric["roundtrip_ok"] = float(record["roundtrip_ok"])
    mlflow.log_metrics({k: v for k, v in numeric.items() if k not in ("bits", "seed")})
    mlflow.set_tags(
        {
            **result.tags,
            "valid": str(record["roundtrip_ok"] or not result.config.verify_coding).lower(),
            "metric": result.metric,
            "codec": result.coding.get("codec", "none"),
        }
    )
    if "error" in result.coding:
        mlflow.set_tag("error", result.coding["error"][:5000])
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "config.yaml").write_text(yaml.safe_dump(to_dict(result.config), sort_keys=False))
        (t / RESULT_ARTIFACT).write_text(json.dumps(record, indent=2))
        _write_layers_csv(result.layers, t / "layers.csv")
        if result.bitstream:
            (t / "model.ecqx").write_bytes(result.bitstream)
        if result.extras:
            (t / "extras.json").write_text(json.dumps(result.extras, indent=2))
        mlflow.log_artifacts(str(t))
    return record


def _write_layers_csv(rows: list[dict[str, Any]], path: Path) -> None:
    import csv

    if not rows:
        path.write_text("")
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def tracked_run(
    cfg: RunConfig,
    *,
    data_dir: Path | None = None,
    tracking_uri: str | None = None,
    cache_dir: Path = RUNS_DIR / "cache",
    log: Callable[[str], None] = print,
    parent_run_id: str | None = None,
    skip_finished: bool = True,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``cfg`` as an MLflow run (or return the record of the finished run with its key).
    Bad input, and an FP model that fails the FP gate (``benchmarks.fpgate``), fail before any MLflow
    run starts. ``extra_tags`` (e.g. an ablation branch) are added to the run's tags."""
    data = load_data(cfg, data_dir, cache_dir)
    key = run_key(cfg, data.fingerprint)
    exp = setup(tracking_uri, experiment_name(cfg.suite))
    if skip_finished and (record := finished_record(exp, key)) is not None:
        log(f"  finished before (run {record['mlflow_run_id']}): skipped")
        return dict(record, skipped=True)
    verdict = fp_stage(cfg, data, cache_dir, log)  # FP stage and its gate, before any MLflow run (FpGateError)
    close_stale(exp, key)
    raise_on_signals()  # SIGTERM/SIGINT end the MLflow run KILLED, never leave it RUNNING
    mlflow = _mlflow()
    name = f"{cfg.model.name}-{cfg.method}-b{bit_width(cfg.params)}-s{cfg.seed}"
    tags = (
        run_tags(cfg, key)
        | owner()
        | (extra_tags or {})
        | ({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})
    )
    with mlflow.start_run(experiment_id=exp, run_name=name, tags=tags, nested=parent_run_id is not None) as active:
        mlflow.log_params(mlflow_params(cfg))
        log_verdict(verdict, cfg)  # trivial baselines, tags fp_gate and recipe, the FP stage's epochs

        def on_epoch(stage: str, epoch: int, row: dict[str, Any]) -> None:
            mlflow.log_metrics(epoch_metrics(stage, row), step=epoch)
            shown = [f"{k} {v:.4f}" for k, v in row.items() if k != "epoch" and isinstance(v, int | float)]
            log(f"    {stage} epoch {epoch}: " + ", ".join(shown))

        try:
            result = run(cfg, data_dir=data_dir, cache_dir=cache_dir, on_epoch=on_epoch, log=log, data=data, key=key)
            explanation = explain_run(result, data, cache_dir, log)
        except KeyboardInterrupt:
            mlflow.end_run(status="KILLED")
            raise
        except BitstreamError as e:  # the run is rejected: FAILED, never in a table
            mlflow.set_tag("error", str(e)[:5000])
            raise BitstreamError(
                f"{name}: {e}; the run is rejected (MLflow run {active.info.run_id}, FAILED)"
            ) from None
        record = log_result(result, active.info.run_id)
        if explanation is not None:
            log_explanation(explanation)
            record.update(explanation.metrics)
        return record


def explain_run(result: RunResult, data, cache_dir: Path, log: Callable[[str], None]):
    """The explanation metrics of a run on its decoded bitstream (None when coding is off: there is
    no bitstream to decode). BitstreamError when the round trip failed."""
    if not result.config.verify_coding:
        return None
    expl = explain_result(result, data, cache_dir, lambda line: None)
    log("    explanations: " + ", ".join(f"{k} {expl.metrics[k]:.4f}" for k in METRICS))
    return expl
