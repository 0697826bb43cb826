"""Explanation drift end to end on digits (quick settings, private MLflow store): the metrics of a
model against itself and against a damaged copy, the decoded bitstream as the only source, the
determinism of a run's numbers and the explain command on an existing store."""

import copy

import mlflow
import pytest
import torch

from benchmarks import cli, explanations, tracking
from benchmarks.explanations import METRICS, compare, subset
from benchmarks.runner import build_model, load_data
from benchmarks.runs import load_runs
from benchmarks.suite import load_suite, run_config
from benchmarks.train import fit

QUICK = ["pretrain.epochs=2", "train.epochs=1"]


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def store(tmp) -> str:
    return f"sqlite:///{tmp}/mlflow.db"


def every_run(tmp, method: str):
    """Every FINISHED run of ``method`` in the digits experiment, with the explanation metrics: also
    a run key's repeats (``--force``), which ``load_runs`` counts once."""
    mlflow.set_tracking_uri(store(tmp))
    exp = mlflow.get_experiment_by_name("ecqx-bench/digits")
    df = mlflow.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'")
    df = df[df["tags.method"] == method]
    return df.rename(columns={f"metrics.{m}": m for m in METRICS})


@pytest.fixture(scope="module")
def trained():
    """An FP mlp trained on digits for a few epochs, and the explained subset."""
    cfg = run_config(load_suite("digits"), "ecq", {"bits": 4}, model="mlp", quick=True, overrides=["pretrain.epochs=8"])
    data = load_data(cfg, None, None)
    model = build_model(cfg, data)
    model.load_state_dict(fit(model, data, cfg.pretrain, device=torch.device("cpu"), seed=0, stage="pretrain").best)
    return model, subset(data.test)


def test_subset_is_fixed_and_seeded(trained):
    cfg = run_config(load_suite("digits"), "ecq", {}, model="mlp", seed=2, quick=True)
    x, y = subset(load_data(cfg, None, None).test)
    assert len(x) == 256 and torch.equal(x, trained[1][0]) and torch.equal(y, trained[1][1])


def test_a_model_against_itself_scores_exactly_one(trained):
    model, (x, y) = trained
    m = compare(model, copy.deepcopy(model), x, y).metrics
    assert (m["expl_spearman"], m["expl_cosine"], m["expl_topk"], m["expl_flip"]) == (1.0, 1.0, 1.0, 0.0)
    assert m["expl_examples"] == m["expl_pairs"] == 256


def test_permuted_first_layer_scores_clearly_lower(trained):
    model, (x, y) = trained
    damaged = copy.deepcopy(model)
    first = next(m for m in damaged.modules() if isinstance(m, torch.nn.Linear))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w = first.weight.reshape(-1)
        first.weight.copy_(w[torch.randperm(w.numel(), generator=g)].reshape(first.weight.shape))
    m = compare(model, damaged, x, y).metrics
    assert m["expl_spearman"] < 0.5 and m["expl_cosine"] < 0.5 and m["expl_topk"] < 0.5, m
    assert m["expl_flip"] > 0.5, m


def run_args(tmp, method="ecq", bits="3"):
    return [
        "run",
        "--suite",
        "digits",
        "--method",
        method,
        "--bits",
        bits,
        "--tracking-uri",
        store(tmp),
        "--quick",
        *QUICK,
    ]


def test_metrics_are_logged_with_the_run_and_deterministic(workdir):
    assert cli.main(run_args(workdir)) == 0
    runs = load_runs("digits", store(workdir))
    assert len(runs) == 1 and all(0.0 <= runs[m].iloc[0] <= 1.0 for m in METRICS)
    first = {m: runs[m].iloc[0] for m in METRICS}
    assert cli.main([*run_args(workdir), "--force"]) == 0  # the same run again: the same numbers
    again = every_run(workdir, runs["method"].iloc[0])
    assert len(again) == 2 and all((again[m] == first[m]).all() for m in METRICS)
    gallery = explanations.read_gallery(runs["run_id"].iloc[0], store(workdir))
    assert gallery["maps"].shape == gallery["fp_maps"].shape == (explanations.GALLERY, 64)


def test_a_broken_bitstream_round_trip_rejects_the_run(workdir, monkeypatch, capsys):
    """The metric decodes the bitstream itself: a decoder that returns other weights is caught
    (while the runner's own round-trip check, made earlier, still passed)."""
    import ecqx.coding

    real = ecqx.coding.decode
    calls = {"n": 0}

    def decode_then_damage(data):
        qm = real(data)
        calls["n"] += 1
        if calls["n"] == 2:  # the second decode is the explanation's
            layer = next(iter(qm.quantized.values()))
            layer.levels.view(-1)[0] += 1
        return qm

    monkeypatch.setattr(ecqx.coding, "decode", decode_then_damage)
    assert cli.main(run_args(workdir)) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("ecqx-bench: error:")]
    assert "decodes to another model" in line and "rejected" in line
    assert load_runs("digits", store(workdir)).empty
    exp = mlflow.get_experiment_by_name("ecqx-bench/digits")
    (run,) = mlflow.search_runs([exp.experiment_id], output_format="list")
    assert run.info.status == "FAILED" and "decodes to another model" in run.data.tags["error"]


def test_explain_fills_an_existing_store_once_without_new_runs(workdir, monkeypatch, capsys):
    with monkeypatch.context() as patch:  # a store logged before explanations
        patch.setattr(tracking, "explain_run", lambda *a: None)
        assert cli.main(run_args(workdir, "uniform_qat", "4")) == 0
        assert cli.main(run_args(workdir, "ecqx", "4")) == 0
    before = load_runs("digits", store(workdir))
    assert len(before) == 2 and "expl_spearman" not in before
    (path,) = (workdir / "runs/cache/checkpoints").glob("*.pt")
    good = path.read_bytes()
    ckpt = torch.load(path, weights_only=False)
    ckpt["state_dict"] = {k: v.flip(0) if v.dim() == 2 else v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, path)  # another FP model under the run's checkpoint key: refused, nothing logged
    capsys.readouterr()
    assert cli.main(["explain", "digits", "--tracking-uri", store(workdir)]) == 2
    assert "not the run's FP model" in capsys.readouterr().err
    assert "expl_spearman" not in load_runs("digits", store(workdir))
    path.write_bytes(good)
    assert cli.main(["explain", "digits", "--tracking-uri", store(workdir)]) == 0
    assert "added to 2 run(s); 0 had them already" in capsys.readouterr().out
    after = load_runs("digits", store(workdir))
    assert sorted(after["run_id"]) == sorted(before["run_id"]) and after[list(METRICS)].notna().all().all()
    assert cli.main(["explain", "digits", "--tracking-uri", store(workdir)]) == 0
    assert "added to 0 run(s); 2 had them already" in capsys.readouterr().out
    again = load_runs("digits", store(workdir))
    assert again[list(METRICS)].equals(after[list(METRICS)])
    # the same numbers as a run that computed them itself
    assert cli.main([*run_args(workdir, "ecqx", "4"), "--force"]) == 0
    same = every_run(workdir, "ecqx")
    assert len(same) == 2 and all(same[m].nunique() == 1 for m in METRICS)


def test_reports_show_explanation_drift(workdir, capsys):
    suite = workdir / "tiny.yaml"
    suite.write_text(
        "name: tiny\nbase: {data: {name: digits}, pretrain: {epochs: 3}, train: {epochs: 1}}\nmodels: [mlp]\n"
        "seeds: [0]\nmethods:\n  ecq: [{bits: [2, 4]}]\n  uniform_qat: [{bits: [2, 4]}]\n"
        "  magnitude: [{target_sparsity: [0.5, 0.8]}]\n"
    )
    assert cli.main(["suite", str(suite), "--tracking-uri", store(workdir), "fp_gate=false"]) == 0
    out = workdir / "results/tiny"
    table = (out / "table.md").read_text()
    assert "expl. Spearman" in table and "top-1 flips (%)" in table and "Explanation drift" in table
    report = (out / "report.md").read_text()
    assert "## Explanation drift" in report and "BD-ρ" in report and "explanation_gallery.png" in report
    assert "Explanation similarity" in (out / "bd_rate.md").read_text()
    for name in ("rate_explanation.png", "explanation_gallery.png", "bd_explanation.csv"):
        assert (out / name).stat().st_size > 0, name
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert cli.main(["tables", str(suite), "--tracking-uri", store(workdir)]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the same store, the same bytes
    from benchmarks.leaderboard import write_leaderboard

    board = write_leaderboard(store(workdir), workdir / "LB.md", [str(suite)]).read_text()
    assert "expl. ρ" in board


def test_gallery_images_of_each_input_kind():
    import numpy as np

    from benchmarks.plots import map_image

    assert map_image(np.arange(64), (1, 8, 8), "digits").shape == (8, 8)
    assert map_image(np.arange(64), (64,), "digits").shape == (8, 8)
    mfcc = map_image(np.arange(490), (490,), "gsc")  # time-major: 49 frames x 10 coefficients
    assert mfcc.shape == (10, 49) and mfcc[3, 2] == 2 * 10 + 3
    image = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    assert map_image(image.sum(0).reshape(-1), (3, 4, 5), "cifar10").shape == (4, 5)  # a map: channels summed
    np.testing.assert_allclose(map_image(image, (3, 4, 5), "voc"), image.mean(0))  # an input: channel mean
