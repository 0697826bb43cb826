"""Reading the MLflow store: one connection and one loader of runs with explicit filters.

Tables, reports, the leaderboard, ablations and ``decode`` read runs only through this module. A
run's method parameters come back typed (the method's ``Config`` dataclass, ``method_config``
column), whatever the MLflow param names of the code that logged them.

MLflow params of a run (see ``tracking.mlflow_params``): every RunConfig field by its dotted key
(``train.lr``, ``model.name``, ...), the method's name as ``method`` and its parameters as
``method.<field>`` (``method.Lambda``). Runs logged before that naming carry ``params.<field>``;
they are read the same way.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from benchmarks.config import ConfigError, checked_values, method_config_class, resolve_params, stable_hash
from benchmarks.storelock import creating

RUNS_DIR = Path("runs")
DEFAULT_TRACKING_URI = f"sqlite:///{RUNS_DIR}/mlflow.db"
METHOD_PREFIX = "method."  # MLflow param prefix of the method's parameters
OLD_METHOD_PREFIX = "params."  # the same, as logged before
IDENTITY_SKIP = {"params.seed", "params.suite", "params.device"}  # not part of a configuration
IDENTITY_SKIP |= {"params.fp_gate", "params.fp_margin", "params.recipe"}  # the FP gate and recipe labels


def _mlflow():
    import mlflow  # imported lazily: importing benchmarks must stay cheap

    return mlflow


def db_url(url: str | None) -> str | None:
    """``postgresql://`` -> ``postgresql+psycopg2://`` when only psycopg2 is installed (SQLAlchemy
    2.1 defaults to psycopg 3); other URLs unchanged."""
    import importlib.util

    if url and url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


_OPENED: set[str] = set()  # database URIs whose tables this process has checked


def connect(tracking_uri: str | None = None) -> str:
    """Point MLflow at the store (default: ``runs/mlflow.db``; a SQLite file's folder is created,
    a PostgreSQL URL gets its driver) and return the URI used."""
    uri = db_url(tracking_uri or DEFAULT_TRACKING_URI)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in reports
    mlflow = _mlflow()
    mlflow.set_tracking_uri(uri)
    opened = str(sqlite_path(uri).resolve()) if sqlite_path(uri) else uri
    if opened not in _OPENED and not uri.startswith(("http://", "https://")):
        with creating(uri, "mlflow"):  # a fresh database gets its tables from one process only
            mlflow.MlflowClient(uri)
            if sqlite_path(uri):
                relocate_artifacts(sqlite_path(uri))
        _OPENED.add(opened)
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_root(uri: str) -> str | None:
    """Where a local store keeps artifacts: ``<folder of the SQLite file>/artifacts`` (the default
    store: ``runs/artifacts``), ``runs/artifacts`` for another database, None for a server."""
    if uri.startswith(("http://", "https://")):
        return None
    folder = sqlite_path(uri).parent if sqlite_path(uri) else RUNS_DIR
    return (folder / "artifacts").resolve().as_uri()


def relocate_artifacts(db: Path) -> int:
    """After the project folder was moved or copied: point the artifact locations of the SQLite
    store ``db`` (experiments and runs, stored as absolute ``file://`` URIs) at the ``artifacts``
    folder beside it. Only locations ending in ``/artifacts`` elsewhere are changed, and only when
    that folder exists here. Returns the number of experiments relocated."""
    import sqlite3

    here = db.parent / "artifacts"
    if not here.is_dir():
        return 0
    root, moved = here.resolve().as_uri(), 0
    with sqlite3.connect(db, timeout=60) as con:
        for exp_id, loc in con.execute("SELECT experiment_id, artifact_location FROM experiments").fetchall():
            if not (loc or "").startswith("file://") or not loc.endswith("/artifacts") or loc == root:
                continue
            con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (root, exp_id))
            con.execute(
                "UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                "WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
                (root, len(loc) + 1, exp_id, len(loc) + 1, loc + "/"),
            )
            moved += 1
    return moved


def experiment_name(suite: str) -> str:
    return f"ecqx-bench/{suite}"


def experiment_id(suite: str, tracking_uri: str | None = None) -> str | None:
    """The id of the suite's experiment, or None when it does not exist (nothing is created)."""
    connect(tracking_uri)
    exp = _mlflow().get_experiment_by_name(experiment_name(suite))
    return None if exp is None else exp.experiment_id


# ------------------------------------------------------------------ typed method parameters


_BOOLS = {"True": True, "true": True, "False": False, "false": False}


def _parse(text: Any, hint: Any) -> Any:
    """A param value from its MLflow text (``str(value)``), typed by the dataclass field's hint."""
    if not isinstance(text, str) or text in ("None", "null"):
        return None if text in ("None", "null") else text
    for tp in [t for t in (typing.get_args(hint) or (hint,)) if t is not type(None)]:
        if tp is str:
            return text
        if tp is bool and text in _BOOLS:
            return _BOOLS[text]
        if tp in (int, float):
            try:
                return tp(text)
            except ValueError:
                continue
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def method_config(method: str, values: dict[str, str]) -> Any:
    """The method's ``Config`` from the MLflow texts of its fields (None when the method is not
    registered here, e.g. a plugin that is not loaded, or the values no longer validate)."""
    try:
        cls = method_config_class(method)
        hints = typing.get_type_hints(cls)
        parsed = {k: _parse(v, hints[k]) for k, v in values.items() if k in hints}
        return resolve_params(method, checked_values(cls, parsed, "params"))
    except ConfigError:
        return None


def _method_values(row: pd.Series) -> dict[str, str]:
    out = {}
    for prefix in (OLD_METHOD_PREFIX, METHOD_PREFIX):  # the newer naming wins
        for col, value in row.items():
            name = col.removeprefix("params.")
            if col.startswith("params.") and name.startswith(prefix) and isinstance(value, str):
                out[name.removeprefix(prefix)] = value
    return out


def config_id(row: pd.Series) -> str:
    """Hash of a run's MLflow params except seed, suite and device: runs that differ only by seed
    share it."""
    items = {k: row[k] for k in row.index if k.startswith("params.") and k not in IDENTITY_SKIP}
    return stable_hash({k: v for k, v in items.items() if isinstance(v, str)}, 12)


# ------------------------------------------------------------------ loading


def _flatten_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Metric and tag columns lose their prefix; old method params are renamed to ``params.method.*``."""
    df = df.rename(columns=lambda c: c.split(".", 1)[1] if c.startswith(("metrics.", "tags.")) else c)
    renamed = {
        c: "params." + METHOD_PREFIX + c.removeprefix("params.params.") for c in df if c.startswith("params.params.")
    }
    return df.rename(columns={c: n for c, n in renamed.items() if n not in df})


def load_runs(
    suite: str,
    tracking_uri: str | None = None,
    *,
    trials: bool = True,
    coded: bool = True,
    experiment: str | None = None,
) -> pd.DataFrame:
    """FINISHED runs of the suite's experiment (or of suite name ``experiment``'s) whose result is
    valid (tag ``valid=true``: the bitstream decoded back to the evaluated model, or coding was off).

    trials: keep search trials (runs nested under a study run; ``kind`` "trial", else "grid");
    coded: keep only runs with a verified coded size (``roundtrip_ok=1`` and a ``coded_bytes``).
    Columns: run_id, start_time, tags and metrics without prefix, MLflow params as ``params.<key>``,
    ``kind``, ``bits`` (int), ``method_config`` (the typed Config or None) and ``config_id``. Sorted
    by model, method, config_id, seed, run_id; empty when nothing qualifies.
    """
    exp_id = experiment_id(experiment or suite, tracking_uri)
    if exp_id is None:
        return pd.DataFrame()
    df = _mlflow().search_runs([exp_id], filter_string="attributes.status = 'FINISHED'", output_format="pandas")
    df = _flatten_columns(df)
    for col in ("valid", "coded_bytes", "roundtrip_ok", "mlflow.parentRunId", "git_commit", "git_dirty"):
        if col not in df:
            df[col] = np.nan
    keep = df["valid"] == "true"  # also drops study parent runs (no valid=true tag)
    if coded:
        keep &= df["coded_bytes"].notna() & (df["roundtrip_ok"] == 1)
    if not trials:
        keep &= df["mlflow.parentRunId"].isna()
    df = df[keep].copy()
    if df.empty:
        return pd.DataFrame()
    df["kind"] = np.where(df["mlflow.parentRunId"].notna(), "trial", "grid")
    if "run_key" in df:  # a grid point run twice (two processes before the work queue) counts once
        df = df.sort_values("start_time").drop_duplicates(["run_key", "kind"], keep="first")
    df["method_config"] = [method_config(r["method"], _method_values(r)) for _, r in df.iterrows()]
    df["bits"] = df["bits"].astype(int)
    df["config_id"] = df.apply(config_id, axis=1)
    return df.sort_values(["model", "method", "config_id", "seed", "run_id"]).reset_index(drop=True)


def download(run_id: str, artifact: str, dst: Path, tracking_uri: str | None = None) -> Path:
    """Download one artifact of a run into ``dst``; ConfigError naming the run when it is missing."""
    uri = connect(tracking_uri)
    try:
        return Path(
            _mlflow().artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact, dst_path=str(dst), tracking_uri=uri
            )
        )
    except Exception as e:  # MLflow raises several types for unknown runs/artifacts
        raise ConfigError(f"cannot fetch {artifact} of MLflow run {run_id!r}: {e}") from None


def history(run_id: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """The run's per-epoch history from its ``result.json`` (epoch 0: the starting weights, then one
    row per QAT epoch with ``val_<metric>``, ``test_<metric>``, ``sparsity``, ``layer_sparsity``);
    empty for runs logged before histories were recorded."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        record = json.loads(download(run_id, "result.json", Path(tmp), tracking_uri).read_text())
    return list(record.get("history", []))


def last_epochs_mean(rows: list[dict[str, Any]], key: str, k: int) -> float:
    """Mean of ``key`` over the last ``k`` QAT epochs (epoch >= 1) of a history; NaN when absent."""
    values = [r[key] for r in rows if r.get("epoch", 0) >= 1 and key in r][-k:]
    return float(np.mean(values)) if values else float("nan")
