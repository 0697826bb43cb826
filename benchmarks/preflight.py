"""Checks before anything runs: stores reachable, output paths writable.

Each fault gives one ``ConfigError`` line naming the store or path and the fix, before any MLflow
run, study or cache file exists: a tracking URI with an unknown scheme, a database that refuses the
connection, an MLflow server that does not answer (bounded: ``CONNECT_TRIES`` tries of
``CONNECT_TIMEOUT_S`` seconds), a ``runs/`` folder that is read-only or full, a ``--json`` path that
is a folder.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from benchmarks.config import ConfigError

CONNECT_TIMEOUT_S = 3  # seconds per connection try
CONNECT_TRIES = 2  # tries before a store counts as unreachable
PROBE_BYTES = 1 << 20  # free space the runs folder must take (a write probe), bytes
SCHEMES = ("sqlite:///", "postgresql", "mysql", "http://", "https://")


def _bounded_http_env() -> None:
    """MLflow's own HTTP client: few retries, short timeouts (no silent hang later)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def check_server(url: str) -> None:
    """An MLflow tracking server answers ``GET /health`` within the bounded tries."""
    import urllib.error
    import urllib.request

    last = ""
    for i in range(CONNECT_TRIES):
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=CONNECT_TIMEOUT_S) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except (urllib.error.URLError, OSError, ValueError) as e:
            last = str(getattr(e, "reason", e))
        if i + 1 < CONNECT_TRIES:
            time.sleep(0.5)
    raise ConfigError(
        f"the MLflow tracking server at {url} does not answer ({last}); start it (make server) or fix --tracking-uri"
    )


def check_database(url: str, what: str) -> None:
    """A PostgreSQL/MySQL URL accepts a connection (bounded by ``CONNECT_TIMEOUT_S``)."""
    import sqlalchemy as sa

    from benchmarks.runs import db_url

    args = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        engine = sa.create_engine(db_url(url), poolclass=sa.pool.NullPool, connect_args=args)
        with engine.connect():
            pass
    except Exception as e:  # driver errors vary (OperationalError, ArgumentError, missing driver)
        shown = sa.engine.make_url(db_url(url)).render_as_string(hide_password=True) if "://" in url else url
        reason = (str(getattr(e, "orig", None) or e).strip().splitlines() or [""])[0][:200]
        raise ConfigError(
            f"{what} {shown} refuses the connection ({reason}); check the URL and that the server runs"
        ) from None


def check_uri(url: str | None, what: str) -> None:
    """A tracking URI or storage URL: known scheme, and reachable (databases, servers)."""
    if url is None:
        return
    if not url.startswith(SCHEMES):
        raise ConfigError(
            f"{what} {url!r} is not a store URL; use sqlite:///PATH, postgresql://USER@HOST/DB or http://HOST:PORT"
        )
    if url.startswith(("http://", "https://")):
        _bounded_http_env()
        check_server(url)
    elif not url.startswith("sqlite:///"):
        check_database(url, what)
    else:
        check_writable(Path(url.removeprefix("sqlite:///")).parent, what)


def check_writable(folder: Path, what: str = "runs folder") -> None:
    """``folder`` can be created and takes a write of ``PROBE_BYTES`` (not read-only, not full)."""
    try:
        write_probe(folder)
    except OSError as e:
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        fix = "free some space" if full else "make it writable or run from a writable folder"
        raise ConfigError(f"{what} {folder} is {'full' if full else 'not writable'} ({e.strerror}); {fix}") from None


def write_probe(folder: Path) -> None:
    """Create ``folder`` and write, sync and remove ``PROBE_BYTES`` there (OSError on a fault)."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0" * PROBE_BYTES)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        probe.unlink(missing_ok=True)


def check_output(path: Path | None, flag: str) -> None:
    """An output file (``--json``) is not a folder and its folder is writable."""
    if path is None:
        return
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name, e.g. {path / 'result.json'}")
    check_writable(path.parent if str(path.parent) else Path("."), f"{flag} folder")


def check_args(args) -> None:
    """Every check that applies to a parsed command line (before the command runs)."""
    from benchmarks.runs import RUNS_DIR

    if getattr(args, "workers", 1) < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if getattr(args, "estimate", False):
        return  # an estimate touches no store and writes nothing
    if args.command in ("run", "suite", "ablation", "search"):
        check_writable(RUNS_DIR)
    check_uri(getattr(args, "tracking_uri", None), "--tracking-uri")
    check_uri(getattr(args, "storage", None), "--storage")
    check_output(getattr(args, "json", None), "--json")
