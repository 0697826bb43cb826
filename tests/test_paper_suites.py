"""The paper's suites end to end in --quick mode on tiny data sets built in the standard layouts:
load, pretrain, quantize with every method, evaluate, code and verify, log to MLflow, tabulate."""

import json

import pytest

from benchmarks import cli
from tests.fixtures import make_cifar, make_gsc, make_voc

BUILDERS = {"gsc": make_gsc, "cifar10": make_cifar, "voc": make_voc}


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("suite", ["gsc", "cifar10", "voc"])
def test_quick_suite_runs_every_method(suite, workdir, capsys):
    data = workdir / "data"
    data.mkdir()
    BUILDERS[suite](data)
    uri = f"sqlite:///{workdir}/mlflow.db"
    assert cli.main(["suite", suite, "--quick", "--data-dir", str(data), "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "4 runs (4 run now, 0 finished before)" in out
    table = (workdir / f"results/{suite}/table.md").read_text()
    metric = "map" if suite == "voc" else "accuracy"
    assert f"test {metric} (%)" in table
    for method in ("ecqx", "ecq", "uniform_qat", "magnitude"):
        assert f"| {method} |" in table


@pytest.mark.parametrize("suite", ["gsc", "cifar10", "voc"])
def test_run_json_carries_the_task_metric(suite, workdir):
    data = workdir / "data"
    data.mkdir()
    BUILDERS[suite](data)
    uri = f"sqlite:///{workdir}/mlflow.db"
    argv = [
        "run",
        "--suite",
        suite,
        "--method",
        "ecqx",
        "--bits",
        "4",
        "--data-dir",
        str(data),
        "--quick",
        "--json",
        "out.json",
        "--tracking-uri",
        uri,
        "train.epochs=1",
    ]
    assert cli.main(argv) == 0
    record = json.loads((workdir / "out.json").read_text())
    key = "map" if suite == "voc" else "accuracy"
    assert 0.0 <= record[f"test_{key}"] <= 1.0 and f"fp_test_{key}" in record
    assert record[f"decoded_test_{key}"] == record[f"test_{key}"] and record["roundtrip_ok"]


def test_missing_data_dir_is_one_clear_error(workdir, capsys):
    code = cli.main(
        [
            "run",
            "--suite",
            "cifar10",
            "--method",
            "ecq",
            "--quick",
            "--data-dir",
            str(workdir / "none"),
            "--tracking-uri",
            f"sqlite:///{workdir}/mlflow.db",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "cifar10: data folder" in err and "does not exist" in err and "--download" in err
    assert not (workdir / "runs" / "cache" / "checkpoints").exists()
