"""``ecqx-bench suite S --estimate``: timed steps times the suite's counts, and no run left behind."""

import time
from pathlib import Path

import pytest

import benchmarks.estimate as est
from benchmarks.cli import main
from benchmarks.suite import grid, load_suite

STEP = 0.02  # seconds a patched training step takes


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_estimate_creates_no_run_and_scales_with_the_timed_step(workdir, monkeypatch, capsys):
    calls = []

    def slow_step(model, opt, criterion, method, batch):
        calls.append(method is not None)
        time.sleep(STEP)

    monkeypatch.setattr(est, "train_step", slow_step)
    monkeypatch.setattr(est, "MIN_TIMED_SECONDS", 0.0)
    monkeypatch.setattr(est, "time_coding", lambda method, model: 0.0)
    assert main(["suite", "digits", "--quick", "--estimate", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "no run was created" in out and "total with 2 worker(s)" in out
    assert not Path("runs").exists() and not list(workdir.iterdir())  # no store, checkpoint or cache

    cfgs = grid(load_suite("digits"), quick=True)
    result = est.estimate(cfgs, None, log=lambda line: None)
    for c in result["fp"] + result["qat"]:
        assert STEP <= c.step < STEP + 0.05, (c.model, c.method, c.step)  # from the timed steps
    # every pair: warm-up + timed steps; each model's FP stage once
    models = {c.model.name for c in cfgs}
    pairs = {(c.model.name, c.method) for c in cfgs}
    assert len(calls) == 2 * (len(pairs) + len(models)) * (est.WARMUP_STEPS + est.TIMED_STEPS)
    qat = result["qat"][0]
    cfg = next(c for c in cfgs if (c.model.name, c.method) == (qat.model, qat.method))
    batches = -(-est.load_or_synthetic(cfg, None, workdir)[1][0] // cfg.train.batch_size)
    assert qat.steps == cfg.train.epochs * batches
    assert qat.run_seconds == pytest.approx(qat.steps * qat.step + qat.evals * qat.eval_example)


def test_estimate_without_data_uses_synthetic_batches_of_the_suite_shapes(workdir, monkeypatch):
    suite = load_suite("gsc")
    cfgs = [c for c in grid(suite, quick=True) if c.method in ("ecq", "uniform_qat")]
    monkeypatch.setattr(est, "time_coding", lambda method, model: 0.0)
    result = est.estimate(cfgs, None, log=lambda line: None)
    assert result["synthetic"] == ["gsc"]
    fp = result["fp"][0]
    assert fp.steps == suite.quick["pretrain"]["epochs"] * -(-64 // cfgs[0].pretrain.batch_size)  # data.limit 64
    assert not list(workdir.iterdir())


def test_makespan_is_longest_first():
    assert est.makespan([5, 4, 3, 2], 2) == 7
    assert est.makespan([5, 4, 3, 3, 3], 2) == 10  # longest-first, not the optimum (9)
    assert est.makespan([1, 1, 1], 5) == 1
    assert est.makespan([], 3) == 0
