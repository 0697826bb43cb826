import math

import pytest

from benchmarks import cli
from benchmarks.ablation import BASE, ablation_configs, delta_table, load_ablation, paired_ci
from benchmarks.config import to_dict


def test_paired_ci_matches_student_t():
    mean, half = paired_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)
    assert math.isnan(paired_ci([1.0])[1])


def test_branches_change_only_what_they_declare():
    ab = load_ablation("digits")
    cfgs = ablation_configs(ab)
    base = {seed: cfg for label, seed, cfg in cfgs if label == BASE}
    for label, seed, cfg in cfgs:
        params, base_params = to_dict(cfg.params), to_dict(base[seed].params)
        diff = {k for k in params if params[k] != base_params.get(k)}
        assert diff == set(ab.branches.get(label, {}).get("params", {})) - {
            k for k, v in ab.params.items() if ab.branches.get(label, {}).get("params", {}).get(k) == v
        }
    assert len(cfgs) == (len(ab.branches) + 1) * len(ab.seeds)


def test_delta_table_pairs_by_seed():
    recs = [
        {"branch": BASE, "seed": 0, "test_accuracy": 0.9, "sparsity": 0.5, "coded_bytes": 100},
        {"branch": BASE, "seed": 1, "test_accuracy": 0.8, "sparsity": 0.5, "coded_bytes": 200},
        {"branch": "x", "seed": 0, "test_accuracy": 0.95, "sparsity": 0.6, "coded_bytes": 50},
        {"branch": "x", "seed": 1, "test_accuracy": 0.85, "sparsity": 0.6, "coded_bytes": 100},
    ]
    table = delta_table(recs, "accuracy").set_index("branch")
    assert table.at["x", "Δ test accuracy (pp)"] == "+5.00 ± 0.00"
    assert table.at["x", "Δ coded size (%)"] == "-50.00 ± 0.00"


def test_quick_ablation_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["ablation", "digits", "--quick", "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "train.epochs=1"]
    assert cli.main(argv) == 0
    text = (tmp_path / "results/digits/ablation.md").read_text()
    assert "| base |" in text and "relevance off (ECQ path)" in text
    assert cli.main(argv) == 0  # resumes: all runs finished before
    assert "finished before" in capsys.readouterr().out
