"""Bad input and unreachable or unwritable stores: one line naming the problem and the fix, exit 2,
within seconds, and no MLflow run (table-driven through ``benchmarks.cli.main``)."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest

from benchmarks import cli, preflight

RUN = ["run", "--method", "ecqx", "--bits", "2", "--quick", "pretrain.epochs=1", "train.epochs=1"]
REFUSED = "postgresql://nobody@127.0.0.1:1/none"  # nothing listens on port 1


def _fault(code: int, text: str):
    def probe(folder: Path) -> None:
        raise OSError(code, text)

    return probe


CASES = {
    "server that does not answer": ([*RUN, "--tracking-uri", "http://127.0.0.1:1"], "does not answer", None),
    "unknown tracking scheme": ([*RUN, "--tracking-uri", "foo://bar"], "is not a store URL", None),
    "refused PostgreSQL tracking": ([*RUN, "--tracking-uri", REFUSED], "refuses the connection", None),
    "refused PostgreSQL storage": (["suite", "digits", "--storage", REFUSED], "--storage", None),
    "Lambda inf": ([*RUN, "params.Lambda=.inf"], "params.Lambda: must be a finite number, got inf", None),
    "Lambda nan": ([*RUN, "params.Lambda=.nan"], "params.Lambda: must be a finite number, got nan", None),
    "Lambda text inf": ([*RUN, "params.Lambda=inf"], "params.Lambda: expected float, got 'inf'", None),
    "20-digit seed": ([*RUN, "--seed", "12345678901234567890"], "seed: must be in 0..4294967295", None),
    "--json to a folder": ([*RUN, "--json", "out"], "--json out is a folder", None),
    "--workers 0": (["suite", "digits", "--workers", "0"], "--workers must be >= 1, got 0", None),
    "runs/ is a file": (RUN, "runs folder runs is not writable", "file"),
    "runs/ read-only": (
        RUN,
        "runs folder runs is not writable (Read-only file system)",
        _fault(errno.EROFS, "Read-only file system"),
    ),
    "runs/ full": (
        RUN,
        "runs folder runs is full (No space left on device); free some space",
        _fault(errno.ENOSPC, "No space left on device"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_no_run(case, tmp_path, monkeypatch, capsys):
    argv, message, fault = CASES[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    if fault == "file":
        (tmp_path / "runs").write_text("not a folder")
    elif fault is not None:
        monkeypatch.setattr(preflight, "write_probe", fault)
    if "--tracking-uri" not in argv:
        argv = [*argv, "--tracking-uri", f"sqlite:///{tmp_path}/store/mlflow.db"]
    start = time.monotonic()
    assert cli.main(argv) == 2
    assert time.monotonic() - start < 20, "answered within seconds"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ecqx-bench: error: ") and message in err[0], err
    assert not (tmp_path / "store/mlflow.db").exists() or _runs(tmp_path / "store/mlflow.db") == 0
    assert not list(tmp_path.glob("runs/cache/checkpoints/*.pt")), "no cache left behind"


def _runs(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as con:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]
