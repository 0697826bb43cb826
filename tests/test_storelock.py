"""Several processes opening one fresh store at once: every one succeeds, the tables exist once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from benchmarks import runs
from tests.test_search import postgres_dbs  # noqa: F401  (fixture: two fresh PostgreSQL databases)

OPEN_BOTH = """
import sys
from benchmarks import runs, storage
from benchmarks.tracking import setup
setup(sys.argv[1], "ecqx-bench/race")
storage.open_storage(sys.argv[2])
print("ok")
"""


def _race(mlflow_url: str, optuna_url: str, cwd, n: int = 4) -> None:
    """``n`` processes open the same fresh MLflow and Optuna stores at the same moment."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_BOTH, mlflow_url, optuna_url],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path.cwd())},
        )
        for _ in range(n)
    ]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, "\n\n".join(outs)
    runs.connect(mlflow_url)

    assert len([e for e in mlflow.search_experiments() if e.name == "ecqx-bench/race"]) == 1


def test_processes_racing_on_a_fresh_sqlite_store(tmp_path):
    _race(f"sqlite:///{tmp_path}/mlflow.db", f"sqlite:///{tmp_path}/optuna.db", tmp_path)


@pytest.mark.postgres
def test_processes_racing_on_a_fresh_postgres_store(tmp_path, postgres_dbs):  # noqa: F811
    from benchmarks.runs import db_url

    optuna_url, mlflow_url = (db_url(u) for u in postgres_dbs)
    _race(mlflow_url, optuna_url, tmp_path)
