"""A real ``mlflow server`` (PostgreSQL backend, served artifacts) on 127.0.0.1: a suite runs
against it over HTTP and its table is read back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest

from benchmarks import cli
from benchmarks.server import server_command, wait_ready
from tests.test_search import postgres_dbs  # noqa: F401  (fixture: two fresh PostgreSQL databases)

TINY = (
    "name: served\nbase: {data: {name: digits}, pretrain: {epochs: 1}, train: {epochs: 1}}\nmodels: [mlp]\n"
    "seeds: [0, 1]\nmethods:\n  ecq: [{bits: 2}]\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path, postgres_dbs):  # noqa: F811
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    cmd = server_command(postgres_dbs[1], tmp_path / "served-artifacts", "127.0.0.1", port)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 120, alive=lambda: proc.poll() is None)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own session: it and its workers
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.slow  # the server starts and migrates its database (~1-2 min)
@pytest.mark.postgres
def test_a_suite_runs_against_a_tracking_server(tmp_path, monkeypatch, server, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "served.yaml").write_text(TINY)
    argv = ["suite", "served.yaml", "--tracking-uri", server]
    assert cli.main(argv) == 0
    assert "2 runs (2 run now, 0 finished before)" in capsys.readouterr().out
    assert not (tmp_path / "runs/artifacts").exists(), "artifacts went to the server"
    assert list((tmp_path / "served-artifacts").rglob("result.json")), "stored by the server"
    assert cli.main(argv) == 0  # resumed: the finished runs' records come back over HTTP
    assert "2 runs (0 run now, 2 finished before)" in capsys.readouterr().out
    assert cli.main(["tables", "served.yaml", "--tracking-uri", server]) == 0
    table = (tmp_path / "results/served/table.md").read_text()
    assert "| mlp | ecq | 2 |" in table and "| 2 |" in table  # one row, two seeds
