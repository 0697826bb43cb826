"""Reports and leaderboard from MLflow: BD maths on synthetic fronts, Pareto fronts, byte-identical
regeneration and the leaderboard rules, on a private store of fake runs logged like tracking.py does."""

import math
import re
import shlex

import mlflow
import pandas as pd
import pytest

from benchmarks import cli, tracking
from benchmarks.config import stable_hash, to_dict
from benchmarks.leaderboard import load_suite_runs, reproduce_command, write_leaderboard
from benchmarks.pareto import bd_metric, bd_rate, pareto_front
from benchmarks.reports import write_reports
from benchmarks.runner import RunResult
from benchmarks.suite import load_suite, run_config

# ------------------------------------------------------------------ Bjøntegaard deltas

SIZES = [1000.0, 2000.0, 4000.0, 8000.0]
LINEAR = [0.80 + 0.05 * math.log(s / 1000) for s in SIZES]  # metric linear in ln(size), slope 0.05


@pytest.mark.parametrize("metric", [LINEAR, [0.5, 0.8, 0.9, 0.93]])
def test_bd_rate_of_a_front_scaled_by_0_8_is_minus_20_percent_and_symmetric(metric):
    smaller = [0.8 * s for s in SIZES]
    assert bd_rate(SIZES, metric, smaller, metric).value == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate(smaller, metric, SIZES, metric).value == pytest.approx(25.0, abs=1e-9)
    assert bd_rate(SIZES, metric, SIZES, metric).value == pytest.approx(0.0, abs=1e-12)


def test_bd_metric_of_scaled_and_shifted_fronts():
    smaller = [0.8 * s for s in SIZES]
    assert bd_metric(SIZES, LINEAR, smaller, LINEAR).value == pytest.approx(0.05 * math.log(1.25), abs=1e-12)
    shifted = [m + 0.02 for m in LINEAR]  # same sizes, +2 pp everywhere
    assert bd_metric(SIZES, LINEAR, SIZES, shifted).value == pytest.approx(0.02, abs=1e-12)
    assert bd_metric(SIZES, shifted, SIZES, LINEAR).value == pytest.approx(-0.02, abs=1e-12)
    # ln(size) at equal metric moves by -0.02 / 0.05: BD-rate = exp(-0.4) - 1
    assert bd_rate(SIZES, LINEAR, SIZES, shifted).value == pytest.approx(100 * math.expm1(-0.4), abs=1e-9)


def test_bd_is_not_available_for_short_or_disjoint_fronts():
    one = bd_rate(SIZES, LINEAR, [500.0], [0.9])
    assert one.value is None and "1 point" in one.reason
    apart = bd_rate(SIZES, LINEAR, SIZES, [m + 0.5 for m in LINEAR])
    assert apart.value is None and "no overlap" in apart.reason
    assert bd_metric(SIZES, LINEAR, [s * 100 for s in SIZES], LINEAR).value is None


# ------------------------------------------------------------------ Pareto fronts


def test_pareto_front_drops_dominated_points_and_handles_ties():
    points = pd.DataFrame(
        [
            ("a", 100, 0.50),
            ("b", 100, 0.60),
            ("c", 200, 0.60),
            ("d", 150, 0.55),
            ("y", 300, 0.70),
            ("z", 300, 0.70),
            ("g", 400, 0.65),
            ("h", 500, 0.90),
        ],
        columns=["config_id", "coded_bytes", "metric"],
    )
    front = pareto_front(points)
    assert list(front["config_id"]) == ["b", "y", "h"]  # equal size: best metric; equal point: first id
    assert front["coded_bytes"].is_monotonic_increasing and front["metric"].is_monotonic_increasing
    assert list(pareto_front(points.iloc[::-1])["config_id"]) == ["b", "y", "h"], "order of the input is irrelevant"


# ------------------------------------------------------------------ a private MLflow store of fake runs

LAYERS = [("1.weight", 8192), ("3.weight", 640)]


def log_run(
    uri: str,
    method: str,
    size: float,
    acc: float,
    *,
    seed: int = 0,
    bits: int | None = 4,
    fp: float = 0.96,
    valid: bool = True,
    params: dict | None = None,
    overrides: dict | None = None,
    parent: str | None = None,
) -> str:
    """Log one fake run exactly as tracking.tracked_run does (tags, params, log_result artifacts)."""
    suite = load_suite("digits")
    params = {**({"bits": bits} if bits else {}), **(params or {})}
    cfg = run_config(suite, method, params, model="mlp", seed=seed, overrides=overrides or {})
    key = stable_hash([to_dict(cfg), size, acc])
    layers = [
        {
            "name": n,
            "params": p,
            "bits": bits or 32,
            "sparsity": 0.5 + i / 10,
            "distinct_values": 7,
            "entropy_bits_per_weight": 1.5 - i / 2,
            "entropy_bound_bytes": p / 8,
            "relevance_share": (0.7, 0.3)[i] if method == "ecqx" else None,
        }
        for i, (n, p) in enumerate(LAYERS)
    ]
    summary = {
        "sparsity": 0.5,
        "entropy_bits_per_weight": 1.0,
        "fp32_bytes": 40000.0,
        "coded_bytes": size,
        "compression_ratio": 40000.0 / size,
        "entropy_bound_bytes": size * 0.9,
    }
    result = RunResult(
        config=cfg,
        run_key=key,
        data_fingerprint="fake",
        metric="accuracy",
        fp_val=fp,
        fp_test=fp,
        val=acc,
        test=acc,
        best_epoch=1,
        summary=summary,
        layers=layers,
        history=[],
        quantized=None,
        bitstream=b"",
        coding={"roundtrip_ok": valid, "codec": "fake"},
        tags={},
    )
    exp = tracking.setup(uri, tracking.experiment_name("digits"))
    tags = tracking.run_tags(cfg, key) | ({"mlflow.parentRunId": parent} if parent else {})
    with mlflow.start_run(experiment_id=exp, tags=tags) as run:
        mlflow.log_params(tracking.mlflow_params(cfg))
        tracking.log_result(result, run.info.run_id)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(tracking URI, run ids by role) of a store holding grid runs, a study with one trial, an
    invalid run, a run outside the tolerance, an open-division run and a run on a cut test split."""
    tmp = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("ecqx-bench/digits", artifact_location=(tmp / "artifacts").as_uri())
    ids = {}
    for method, grid in {
        "ecqx": [(0.2, 3000, 0.960), (0.5, 2000, 0.955), (1.0, 1500, 0.90)],
        "ecq": [(0.2, 3200, 0.958), (0.5, 2200, 0.950), (1.0, 1600, 0.85)],
    }.items():
        for lam, size, acc in grid:
            for seed in (0, 1):
                ids[f"{method}-{lam}-{seed}"] = log_run(
                    uri, method, size + 10 * seed, acc - 0.002 * seed, seed=seed, params={"Lambda": lam}
                )
    ids["uniform"] = log_run(uri, "uniform_qat", 5000, 0.965)
    ids["magnitude"] = log_run(uri, "magnitude", 30000, 0.97, bits=None, params={"target_sparsity": 0.5})
    ids["invalid"] = log_run(uri, "ecqx", 500, 0.96, valid=False, params={"Lambda": 0.7})
    ids["outside"] = log_run(uri, "ecq", 800, 0.80, params={"Lambda": 1.5})
    with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("ecqx-bench/digits").experiment_id) as study:
        mlflow.set_tag("study", "fake")
    ids["trial"] = log_run(uri, "ecqx", 1800, 0.957, params={"Lambda": 0.3, "p": 0.2}, parent=study.info.run_id)
    ids["open"] = log_run(uri, "ecqx", 1000, 0.955, params={"Lambda": 0.4}, overrides={"train": {"epochs": 3}})
    ids["cut"] = log_run(uri, "ecqx", 900, 0.99, overrides={"data": {"limit": 64}})
    return uri, ids


def test_reports_regenerate_byte_identically(store, tmp_path):
    uri, ids = store
    first = write_reports("digits", uri, tmp_path / "a")
    second = write_reports("digits", uri, tmp_path / "b")
    names = sorted(p.name for p in first)
    assert names == sorted(p.name for p in second)
    for name in (
        "report.md",
        "table.md",
        "fronts.csv",
        "rate_accuracy.png",
        "pareto.png",
        "bd_rate.csv",
        "bd_rate.md",
        "profiles.csv",
        "profiles.png",
        "profiles.md",
    ):
        assert name in names, name
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    report = (tmp_path / "a" / "report.md").read_text()
    assert "`ecqx-bench tables digits`" in report and "1 search trial(s)" in report
    assert "![" in report and "(rate_accuracy.png)" in report and "(bd_rate.md)" in report
    assert not re.search(r"\d{4}-\d{2}-\d{2}", report), "no dates or times in a generated report"
    fronts = pd.read_csv(tmp_path / "a" / "fronts.csv")
    assert "trial" in set(fronts["kind"]), "search trials take part in the fronts"
    used = " ".join(fronts["run_ids"])
    assert ids["trial"] in used and ids["open"] not in used and ids["invalid"] not in used and ids["cut"] not in used
    bd = (tmp_path / "a" / "bd_rate.md").read_text()
    assert "PCHIP" in bd and "the reference front has 1 point" in bd  # uniform_qat has one configuration
    profiles = pd.read_csv(tmp_path / "a" / "profiles.csv")
    assert set(profiles["method"]) == {"ecq", "ecqx", "magnitude", "uniform_qat"}
    assert "relevance_share" in profiles and "relevance share" in (tmp_path / "a" / "profiles.md").read_text()


def _board(text: str, division: str) -> str:
    return text.split(f"### {division} division")[1].split("###")[0]


def test_leaderboard_ranks_verified_runs_within_tolerance_by_size(store, tmp_path):
    uri, ids = store
    path = write_leaderboard(uri, tmp_path / "LEADERBOARD.md", ["digits"])
    text = path.read_text()
    assert "tolerance 1 pp" in text and "Rules" in text
    closed, open_ = _board(text, "Closed"), _board(text, "Open")
    rows = [line for line in closed.splitlines() if line.startswith("| 1 ")]
    assert len(rows) == 1 and ids["trial"] in rows[0] and "| 1800 |" in rows[0]
    for excluded in ("invalid", "outside", "cut", "open"):
        assert ids[excluded] not in closed, excluded
    assert ids["open"] in next(line for line in open_.splitlines() if line.startswith("| 1 "))
    assert ids["cut"] not in open_ and ids["invalid"] not in open_
    assert ids["ecqx-0.2-0"] in closed and ids["ecqx-0.2-1"] not in closed, "one entry per configuration"
    command = "ecqx-bench run --suite digits --method ecqx --bits 4 --model mlp --seed 0 params.Lambda=0.3 params.p=0.2"
    assert f"`{command}`" in closed
    assert write_leaderboard(uri, tmp_path / "again.md", ["digits"]).read_bytes() == path.read_bytes()


class Captured(Exception):
    pass


@pytest.mark.parametrize("role", ["trial", "open", "magnitude"])
def test_reproduce_command_resolves_to_the_runs_config(store, monkeypatch, role):
    uri, ids = store
    runs = load_suite_runs("digits", uri)
    command = reproduce_command(runs[runs["run_id"] == ids[role]].iloc[0], "digits")

    def capture(cfg, **kwargs):
        raise Captured(cfg)

    monkeypatch.setattr(tracking, "tracked_run", capture)
    with pytest.raises(Captured) as caught:
        cli.main(shlex.split(command)[1:])
    params = mlflow.MlflowClient(uri).get_run(ids[role]).data.params
    assert tracking.mlflow_params(caught.value.args[0]) == params


def test_runs_logged_with_the_old_param_names_read_back_typed(tmp_path):
    """Runs logged before method params were named ``method.<field>`` carry ``params.<field>``."""
    from benchmarks.runs import load_runs

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    new = log_run(uri, "ecqx", 2000, 0.95, params={"Lambda": 0.5, "p": 0.2})
    cfg = run_config(load_suite("digits"), "ecqx", {"bits": 3, "Lambda": 0.7}, model="mlp")
    old_params = tracking.flatten(to_dict(cfg))  # the old naming: params.Lambda, params.bits, ...
    assert "params.Lambda" in old_params and "method.Lambda" not in old_params
    exp = tracking.setup(uri, tracking.experiment_name("digits"))
    with mlflow.start_run(experiment_id=exp, tags=tracking.run_tags(cfg, "old")) as run:
        mlflow.log_params(old_params)
        mlflow.set_tags({"valid": "true", "metric": "accuracy"})
        mlflow.log_metrics({"test_accuracy": 0.9, "fp_test_accuracy": 0.95, "coded_bytes": 1000, "roundtrip_ok": 1})
    runs = load_runs("digits", uri).set_index("run_id")
    assert (
        runs.loc[new, "method_config"]
        == run_config(load_suite("digits"), "ecqx", {"bits": 4, "Lambda": 0.5, "p": 0.2}, model="mlp").params
    )
    old = runs.loc[run.info.run_id, "method_config"]
    assert old == cfg.params and isinstance(old.Lambda, float) and old.bits == 3
