"""End-to-end CLI tests on the embedded digits data (quick settings), with a private MLflow store."""

import json
from pathlib import Path

import pytest

from benchmarks import cli, runner

QUICK = ["--quick", "pretrain.epochs=2", "train.epochs=1"]


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def store(tmp: Path) -> str:
    return f"sqlite:///{tmp}/mlflow.db"


def runs_by_status(tmp: Path, suite: str) -> dict[str, int]:
    import mlflow

    mlflow.set_tracking_uri(store(tmp))
    exp = mlflow.get_experiment_by_name(f"ecqx-bench/{suite}")
    if exp is None:
        return {}
    out: dict[str, int] = {}
    for r in mlflow.search_runs([exp.experiment_id], output_format="list"):
        out[r.info.status] = out.get(r.info.status, 0) + 1
    return out


VOLATILE = {"mlflow_run_id", "train_seconds", "encode_seconds", "decode_seconds", "skipped"}


def test_run_writes_json_and_is_reproducible(workdir):
    argv = ["run", "--suite", "digits", "--method", "ecqx", "--bits", "4", "--tracking-uri", store(workdir), *QUICK]
    assert cli.main([*argv, "--json", "a.json"]) == 0
    a = json.loads(Path("a.json").read_text())
    for key in (
        "suite",
        "dataset",
        "model",
        "method",
        "bits",
        "seed",
        "fp_test_accuracy",
        "test_accuracy",
        "sparsity",
        "entropy_bits_per_weight",
        "fp32_bytes",
        "entropy_bound_bytes",
        "compression_ratio",
        "mlflow_run_id",
        "coded_bytes",
        "decoded_test_accuracy",
        "roundtrip_ok",
    ):
        assert key in a, key
    assert a["roundtrip_ok"] and a["decoded_test_accuracy"] == a["test_accuracy"]
    assert a["compression_ratio"] == pytest.approx(a["fp32_bytes"] / a["coded_bytes"])
    assert cli.main([*argv, "--json", "b.json", "--force"]) == 0
    b = json.loads(Path("b.json").read_text())
    assert {k: v for k, v in a.items() if k not in VOLATILE} == {k: v for k, v in b.items() if k not in VOLATILE}
    assert a["mlflow_run_id"] != b["mlflow_run_id"]
    assert cli.main([*argv, "--json", "c.json"]) == 0
    assert json.loads(Path("c.json").read_text())["skipped"] is True, "a finished run key is skipped"
    assert runs_by_status(workdir, "digits") == {"FINISHED": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--method", "nope"], "unknown method 'nope'; known: ecq, ecqx, magnitude, uniform_qat"),
        (["run", "--suite", "nope", "--method", "ecq"], "unknown suite 'nope'; known: "),
        (["run", "--method", "ecq", "train.epoch=3"], "unknown config key(s) in train: epoch; allowed: epochs"),
        (["run", "--method", "ecq", "--bits", "1"], "bits must be an integer in 2..8, got 1"),
        (["run", "--method", "ecqx", "params.Lambda=-1"], "Lambda (Λ) must be in [0.0, inf], got -1"),
        (["run", "--method", "ecq", "params.lamda=1"], "unknown key(s) lamda for ECQ.Config; allowed: bits, Lambda"),
        (["run", "--method", "ecq", "model.name=resnet50"], "model.name: unknown model 'resnet50'; known: "),
        (["suite", "digits", "seeds=oops"], "unknown config key(s)"),
    ],
)
def test_bad_input_gives_one_clear_line_and_no_run(workdir, capsys, args, message):
    code = cli.main([*args, "--tracking-uri", store(workdir)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("ecqx-bench: error: ") and len(err.splitlines()) == 1
    assert message in err
    assert "RUNNING" not in runs_by_status(workdir, "digits")
    assert runs_by_status(workdir, "digits") == {}


def test_interrupted_suite_resumes_without_losing_or_repeating(workdir, monkeypatch, capsys):
    suite = workdir / "tiny.yaml"
    suite.write_text(
        "name: tiny\nbase: {data: {name: digits}, pretrain: {epochs: 2}, train: {epochs: 1}}\nmodels: [mlp]\n"
        "seeds: [0]\nmethods:\n  ecq: [{bits: 2}, {bits: 3}]\n  uniform_qat: [{bits: 4}]\n"
        "  magnitude: [{target_sparsity: 0.5}]\n"
    )
    real_fit, calls = runner.fit, {"train": 0}

    def flaky_fit(*args, **kwargs):
        if kwargs.get("stage") == "train":
            calls["train"] += 1
            if calls["train"] == 3:
                raise KeyboardInterrupt("simulated kill")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runner, "fit", flaky_fit)
    assert cli.main(["suite", str(suite), "--tracking-uri", store(workdir)]) == 130
    assert runs_by_status(workdir, "tiny") == {"FINISHED": 2, "KILLED": 1}
    monkeypatch.setattr(runner, "fit", real_fit)
    capsys.readouterr()
    assert cli.main(["suite", str(suite), "--tracking-uri", store(workdir)]) == 0
    out = capsys.readouterr().out
    assert "4 runs (2 run now, 2 finished before)" in out
    assert runs_by_status(workdir, "tiny") == {"FINISHED": 4, "KILLED": 1}
    table = (workdir / "results/tiny/table.md").read_text()
    assert "FP32 baseline" in table and "uniform_qat" in table and "s=0.5" in table
    before = (workdir / "results/tiny/table.csv").read_bytes(), table
    assert cli.main(["tables", str(suite), "--tracking-uri", store(workdir)]) == 0
    assert (
        (workdir / "results/tiny/table.csv").read_bytes(),
        (workdir / "results/tiny/table.md").read_text(),
    ) == before


def test_decode_rebuilds_the_model_from_run_id_or_file(workdir, capsys):
    uri = store(workdir)
    argv = ["run", "--suite", "digits", "--method", "ecq", "--bits", "3", "--tracking-uri", uri, "--json", "r.json"]
    assert cli.main([*argv, *QUICK]) == 0
    record = json.loads(Path("r.json").read_text())
    capsys.readouterr()
    assert cli.main(["decode", record["mlflow_run_id"], "--tracking-uri", uri]) == 0
    decoded = json.loads(capsys.readouterr().out)
    assert decoded["test_accuracy"] == record["test_accuracy"] and decoded["coded_bytes"] == record["coded_bytes"]
    import mlflow

    folder = Path(mlflow.artifacts.download_artifacts(run_id=record["mlflow_run_id"]))
    assert cli.main(["decode", str(folder / "model.ecqx")]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == record["test_accuracy"]
    broken = workdir / "broken.ecqx"
    data = bytearray((folder / "model.ecqx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken.write_bytes(bytes(data))
    (workdir / "config.yaml").write_text((folder / "config.yaml").read_text())
    assert cli.main(["decode", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "ecqx-bench: error:" in err and "CRC32" in err


def test_suite_with_two_workers_pretrains_once_per_group(workdir, capsys):
    suite = workdir / "two.yaml"
    suite.write_text(
        "name: two\nbase: {data: {name: digits}, pretrain: {epochs: 2}, train: {epochs: 1}}\nmodels: [mlp]\n"
        "seeds: [0]\nmethods:\n  ecq: [{bits: [2, 3]}]\n  uniform_qat: [{bits: 4}]\n"
    )
    assert cli.main(["suite", str(suite), "--workers", "2", "--tracking-uri", store(workdir)]) == 0
    assert "3 runs (3 run now, 0 finished before)" in capsys.readouterr().out
    assert runs_by_status(workdir, "two") == {"FINISHED": 3}
    assert len(list((workdir / "runs/cache/checkpoints").glob("*.pt"))) == 1
