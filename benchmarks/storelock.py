"""One process at a time creates a store's tables.

MLflow's SQLAlchemy store and Optuna's RDB storage create (and migrate) their tables the first time
a process opens a fresh database. Two processes doing so at once collide (PostgreSQL: duplicate
sequence names; SQLite: alembic half-way through) and leave the store unusable. ``creating(url)``
serialises that first opening across processes and machines: a PostgreSQL advisory lock (held by a
session of the same server, so it covers every machine), or an exclusive file lock beside a SQLite
file. Other URLs (``http://`` servers, which create their own tables) need no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path

LOCK_TIMEOUT_S = 120  # waiting longer than this for another process's table creation is a fault


def _advisory_key(url: str, purpose: str) -> int:
    """A signed 64-bit advisory-lock key for (database, purpose)."""
    digest = hashlib.sha256(f"ecqx-bench:{purpose}:{url}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def _postgres_lock(url: str, purpose: str) -> Iterator[None]:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'"))
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _advisory_key(url, purpose)})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _advisory_key(url, purpose)})
    finally:
        engine.dispose()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on the file ``path`` (created) for the body; released if the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes, also if the process dies
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def creating(url: str, purpose: str) -> Iterator[None]:
    """Hold the store-creation lock of ``url`` (``purpose`` tells MLflow's tables from Optuna's,
    which may share one database) while the body opens the store."""
    if url.startswith("postgresql"):
        with _postgres_lock(url, purpose):
            yield
    elif url.startswith("sqlite:///"):
        with file_lock(Path(url.removeprefix("sqlite:///") + f".{purpose}.lock")):
            yield
    else:
        yield
