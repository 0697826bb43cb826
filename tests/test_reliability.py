"""Suites across processes: workers die with their parent, signals end a suite cleanly, runs of
dead processes are closed KILLED, and concurrent suites on one store run each grid point once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import cli
from tests.test_search import postgres_dbs  # noqa: F401  (fixture: two fresh PostgreSQL databases)

SUITE = (
    "name: two\nbase: {data: {name: digits}, pretrain: {epochs: 2}, train: {epochs: %d}}\nmodels: [mlp]\n"
    "seeds: [0]\nmethods:\n  ecq: [{bits: [2, 3]}]\n"
)
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def suite_cmd(tmp: Path, *extra: str, epochs: int = 15) -> list[str]:
    (tmp / "two.yaml").write_text(SUITE % epochs)
    return [sys.executable, "-m", "benchmarks.cli", "suite", str(tmp / "two.yaml"), *extra]


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - out
        out |= frontier
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def runs(tracking_uri: str, suite: str = "two") -> list:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    exp = mlflow.get_experiment_by_name(f"ecqx-bench/{suite}")
    return [] if exp is None else mlflow.search_runs([exp.experiment_id], output_format="list")


def statuses(tracking_uri: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in runs(tracking_uri):
        out[r.info.status] = out.get(r.info.status, 0) + 1
    return out


def finished_per_key(tracking_uri: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in runs(tracking_uri):
        if r.info.status == "FINISHED":
            out[r.data.tags["run_key"]] = out.get(r.data.tags["run_key"], 0) + 1
    return out


def start_and_wait_for_training(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start a ``suite --workers 2`` and wait until both workers train (their MLflow runs exist)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=ENV)
    wait_for(
        lambda: all(f"[{i}] train epoch 1:" in log.read_text() for i in (1, 2)) or proc.poll() is not None,
        240,
        "both workers training",
    )
    assert proc.poll() is None, log.read_text()
    return proc


@pytest.mark.slow  # three suite starts with worker processes (~1-4 min)
def test_signals_stop_the_whole_suite_and_a_rerun_completes_the_grid(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = suite_cmd(tmp_path, "--workers", "2", "--tracking-uri", uri)
    log = tmp_path / "log.txt"

    # SIGTERM: workers stopped, their runs KILLED, one summary line, exit 143
    proc = start_and_wait_for_training(cmd, tmp_path, log)
    workers = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143, log.read_text()
    text = log.read_text()
    assert "stopped by SIGTERM; 0 of 2 grid runs finished, 2 will run when the same command is started again" in text
    assert "Traceback" not in text, text
    wait_for(lambda: not any(alive(p) for p in workers), 10, "workers gone")
    assert statuses(uri) == {"KILLED": 2}, "no run left RUNNING"

    # SIGKILL of the parent: the kernel kills the workers (PR_SET_PDEATHSIG)
    proc = start_and_wait_for_training(cmd, tmp_path, log)
    workers = descendants(proc.pid)
    assert len(workers) >= 2
    proc.kill()
    proc.wait(timeout=10)
    wait_for(lambda: not any(alive(p) for p in workers), 10, f"workers {workers} gone after SIGKILL of the parent")
    assert statuses(uri) == {"KILLED": 2, "RUNNING": 2}  # the killed workers' runs, closed on the next start

    # a rerun closes the orphans, runs every grid point once
    os.chdir(tmp_path)
    assert cli.main(cmd[3:]) == 0
    assert statuses(uri) == {"KILLED": 4, "FINISHED": 2}
    assert sorted(finished_per_key(uri).values()) == [1, 1]


def _together(tmp_path: Path, extra: list[str], uri: str, third: bool = False) -> None:
    """Two ``suite`` processes started at once (and, with ``third``, one more once the first grid
    point is done): every grid point FINISHED exactly once."""
    cmd = suite_cmd(tmp_path, "--tracking-uri", uri, *extra, epochs=3)
    if third:  # three grid points, so that the third process arrives mid-way
        (tmp_path / "two.yaml").write_text((SUITE % 3).replace("bits: [2, 3]", "bits: [2, 3, 4]"))
    logs = [tmp_path / f"log{i}.txt" for i in range(3 if third else 2)]

    def start(log: Path) -> subprocess.Popen:
        return subprocess.Popen(cmd, cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT, env=ENV)

    procs = [start(log) for log in logs[:2]]
    if third:
        wait_for(lambda: any("done:" in log.read_text() for log in logs[:2]), 300, "a first grid point done")
        procs.append(start(logs[2]))
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0] * len(procs), "\n\n".join(log.read_text() for log in logs)
    points = 3 if third else 2
    assert sorted(finished_per_key(uri).values()) == [1] * points, "every grid point FINISHED exactly once"
    assert statuses(uri) == {"FINISHED": points}


def test_two_suites_started_together_on_a_fresh_sqlite_store_run_each_point_once(tmp_path):
    _together(tmp_path, ["--storage", f"sqlite:///{tmp_path}/optuna.db"], f"sqlite:///{tmp_path}/mlflow.db")
    from benchmarks.tables import write_tables

    os.chdir(tmp_path)
    table = write_tables("two", f"sqlite:///{tmp_path}/mlflow.db").read_text()
    assert table.count("| ecq |") == 2 and "| 1 |" in table


@pytest.mark.slow
@pytest.mark.postgres
def test_three_machines_run_a_suite_on_postgres_each_point_once(tmp_path, postgres_dbs):  # noqa: F811
    from benchmarks.runs import db_url

    optuna_url, mlflow_url = (db_url(u) for u in postgres_dbs)
    _together(tmp_path, ["--storage", optuna_url], mlflow_url, third=True)


HANG_IN_TRAINING = """
import sys, time
from benchmarks import cli, runner
real_fit = runner.fit
def fit(*args, **kwargs):
    if kwargs.get("stage") == "train":
        print("HANG", flush=True)
        time.sleep(600)
    return real_fit(*args, **kwargs)
runner.fit = fit
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_killed_search_trial_ends_killed(tmp_path, monkeypatch):
    from benchmarks import search
    from benchmarks import storage as storage_module
    from tests.test_search import ARGS

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    argv = [*ARGS, "--trials", "1", "--tracking-uri", uri, "--storage", f"sqlite:///{tmp_path}/optuna.db"]
    log = tmp_path / "log.txt"
    proc = subprocess.Popen(
        [sys.executable, "-c", HANG_IN_TRAINING, *argv],
        cwd=tmp_path,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=ENV,
    )
    wait_for(lambda: "HANG" in log.read_text() or proc.poll() is not None, 240, "the trial training")
    assert proc.poll() is None, log.read_text()
    proc.kill()
    proc.wait(timeout=10)
    running = [r for r in runs(uri, "digits") if r.info.status == "RUNNING"]
    assert len(running) == 2  # the study run and its trial, left by the SIGKILL
    trial_run = next(r for r in running if "mlflow.parentRunId" in r.data.tags)
    for module, name, value in (
        (storage_module, "HEARTBEAT_S", 1),
        (storage_module, "GRACE_S", 2),
        (search, "POLL_S", 0.2),
    ):
        monkeypatch.setattr(module, name, value)
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 0  # the resumed search: the dead trial turns FAIL, its run KILLED
    import mlflow

    assert mlflow.get_run(trial_run.info.run_id).info.status == "KILLED"
    assert not [r for r in runs(uri, "digits") if r.info.status == "RUNNING"]


def test_tables_count_a_grid_point_run_twice_once(tmp_path):
    """Two FINISHED runs with one run key (two processes before the work queue): one seed, not two."""
    import mlflow

    from benchmarks.runs import load_runs
    from tests.test_reports import log_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("ecqx-bench/digits", artifact_location=(tmp_path / "artifacts").as_uri())
    for _ in range(2):
        log_run(uri, "ecq", 3000, 0.95, seed=0)
    log_run(uri, "ecq", 3000, 0.95, seed=1)
    df = load_runs("digits", uri)
    assert sorted(df["seed"].astype(int)) == [0, 1]


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fault", ["pickle", "truncated"])
def test_a_bad_cached_checkpoint_is_refused_removed_and_rebuilt(tmp_path, fault):
    import pickle

    import torch

    from benchmarks.runner import load_data, pretrained_model
    from benchmarks.suite import load_suite, run_config

    cfg = run_config(load_suite("digits"), "ecq", {"bits": 2}, overrides={"pretrain": {"epochs": 1}})
    data, cache, lines = load_data(cfg, None, tmp_path), tmp_path / "cache", []
    _, info = pretrained_model(cfg, data, "cpu", cache, lines.append, None)
    (path,) = (cache / "checkpoints").glob("*.pt")
    good = path.read_bytes()
    torch.load(path, weights_only=True)  # what is saved is tensors and plain types only
    marker = tmp_path / "payload_ran"
    path.write_bytes(pickle.dumps(_Payload(marker)) if fault == "pickle" else good[: len(good) // 2])
    lines.clear()
    model, again = pretrained_model(cfg, data, "cpu", cache, lines.append, None)
    assert not marker.exists(), "the planted pickle ran code"
    assert sum("is unusable" in line and "removed, training it again" in line for line in lines) == 1, lines
    assert again["fp_val"] == info["fp_val"], "retrained to the same FP model (same seed)"
    assert torch.load(path, weights_only=True)["info"]["fp_val"] == info["fp_val"]


def test_moving_the_project_folder_keeps_resume_and_artifacts(tmp_path, monkeypatch):
    import json
    import shutil

    import mlflow

    first, moved = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    monkeypatch.chdir(first)
    argv = ["run", "--method", "ecq", "--bits", "2", "--quick", "pretrain.epochs=1", "train.epochs=1"]
    assert cli.main([*argv, "--json", "one.json"]) == 0  # default store: runs/mlflow.db, runs/artifacts
    run_id = json.loads((first / "one.json").read_text())["mlflow_run_id"]
    shutil.move(first, moved)
    monkeypatch.chdir(moved)
    assert cli.main([*argv, "--json", "two.json"]) == 0
    assert json.loads((moved / "two.json").read_text())["skipped"] is True, "resumed: the finished run is found"
    artifact_uri = mlflow.get_run(run_id).info.artifact_uri
    assert artifact_uri.startswith((moved / "runs/artifacts").as_uri()), artifact_uri
    assert cli.main(["decode", run_id]) == 0  # the bitstream is read from the moved folder
    exp = mlflow.get_experiment(mlflow.get_run(run_id).info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs
