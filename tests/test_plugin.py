"""A researcher's own method: one file plus one suite YAML, copied into a temporary folder, found
through the suite's ``plugins:``, run on digits (quick) and present in the generated tables."""

import shutil
from pathlib import Path

import pandas as pd

from benchmarks import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_plugin_method_runs_in_a_suite_and_reaches_the_tables(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "my_method"
    folder.mkdir()
    for name in ("random_pruning.py", "random_pruning.yaml"):
        shutil.copy(EXAMPLES / name, folder / name)
    monkeypatch.chdir(tmp_path)
    suite = str(folder / "random_pruning.yaml")
    argv = ["suite", suite, "--quick", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "train.epochs=1"]
    assert cli.main(argv) == 0
    table = pd.read_csv(tmp_path / "results/random_pruning/table.csv")
    row = table[table["method"] == "random_pruning"].iloc[0]
    assert row["setting"] == "sparsity=0.5" and row["bits"] == 32
    assert abs(row["sparsity"] - 0.5) < 0.05, "the method's masks reach the coded model"
    assert "random_pruning" in (tmp_path / "results/random_pruning/table.md").read_text()
    from ecqx import METHODS

    assert "random_pruning" in METHODS.names()
    out = capsys.readouterr().out
    assert "random_pruning" in out and "round trip ok" in out


def test_a_missing_plugin_file_is_one_clear_line(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nplugins: [nope.py]\nmodels: [mlp]\nmethods: {ecq: [{}]}\n")
    assert cli.main(["suite", str(suite), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ecqx-bench: error: plugins:") and "nope.py not found" in err
