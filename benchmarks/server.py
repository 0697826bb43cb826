"""``make server`` / ``python -m benchmarks.server``: an MLflow tracking server for several machines.

Runs are stored in a database (PostgreSQL; its tables are created by the server on first start) and
artifacts are served by the server (``--serve-artifacts``, stored under ``--artifacts-destination``),
so machines need only ``--tracking-uri http://HOST:PORT``. The grid's work queue goes into an Optuna
storage that every machine reaches (``--storage postgresql://...``; see README, "Several machines").
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from benchmarks.runs import db_url

READY_TIMEOUT_S = 120.0  # a server that does not answer /health within this is a fault


def server_command(backend: str, artifacts: Path, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The ``mlflow server`` command line (the PostgreSQL URL gets its installed driver)."""
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    return [
        mlflow,
        "server",
        "--backend-store-uri",
        db_url(backend),
        "--serve-artifacts",
        "--artifacts-destination",
        str(Path(artifacts).resolve()),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def wait_ready(url: str, timeout: float = READY_TIMEOUT_S, alive=lambda: True) -> None:
    """Wait (bounded) until the server at ``url`` answers ``/health``; RuntimeError if it does not,
    or at once when ``alive()`` turns False (the server process ended)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the MLflow server at {url} did not answer /health within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.server", description=__doc__)
    ap.add_argument("--backend-store-uri", default="postgresql://postgres@127.0.0.1:5432/mlflow")
    ap.add_argument("--artifacts-destination", type=Path, default=Path("runs/server-artifacts"))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5000)
    args = ap.parse_args(argv)
    args.artifacts_destination.mkdir(parents=True, exist_ok=True)
    cmd = server_command(args.backend_store_uri, args.artifacts_destination, args.host, args.port)
    print(f"MLflow server on http://{args.host}:{args.port} (runs: {args.backend_store_uri})", flush=True)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
