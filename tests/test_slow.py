"""Long end-to-end runs (``make test-slow``): the default suite's real budget, not the quick one."""

import json

import pytest

from benchmarks import cli


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ecqx", "ecq", "uniform_qat", "magnitude"])
def test_digits_default_budget_keeps_accuracy(method, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bits = [] if method == "magnitude" else ["--bits", "4"]
    argv = [
        "run",
        "--suite",
        "digits",
        "--method",
        method,
        *bits,
        "--json",
        "r.json",
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
    ]
    assert cli.main(argv) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["roundtrip_ok"] and r["decoded_test_accuracy"] == r["test_accuracy"]
    assert r["test_accuracy"] > r["fp_test_accuracy"] - 0.1 and r["fp_test_accuracy"] > 0.9
