"""The trade-off search end to end on the embedded digits data (tiny epochs), with private stores:
parallel workers, two "machines" on PostgreSQL, resume after a kill, failing trials."""

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks import cli, runner, search, search_space
from benchmarks import storage as storage_module
from benchmarks.config import ConfigError

STUDY = "digits/uniform_qat/quick"
ARGS = ["search", "digits", "--method", "uniform_qat", "--quick", "pretrain.epochs=1", "train.epochs=1"]


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables created once (the migrations take seconds)."""
    import mlflow

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.set_tracking_uri(f"sqlite:///{path}")
    mlflow.MlflowClient().search_experiments()
    return path


@pytest.fixture()
def workdir(tmp_path, monkeypatch, mlflow_template):
    monkeypatch.chdir(tmp_path)
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    return tmp_path


def stores(tmp: Path) -> list[str]:
    return ["--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--storage", f"sqlite:///{tmp}/optuna.db"]


def load(storage: str) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=storage)


def states(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def check_nested(study: optuna.Study, tracking_uri: str, statuses=("FINISHED",)) -> None:
    """Every finished trial links an MLflow run nested under the study's one parent run."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    parent = study.user_attrs[search.PARENT_ATTR]
    exp = mlflow.get_experiment_by_name("ecqx-bench/digits")
    parents = mlflow.search_runs(
        [exp.experiment_id], filter_string=f"tags.study = '{STUDY}' and tags.role = 'study'", output_format="list"
    )
    assert [r.info.run_id for r in parents] == [parent]
    for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.FAIL)):
        run = mlflow.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent, t.number
        assert run.info.status in statuses
        if t.state == TrialState.COMPLETE:
            assert run.data.tags["trial"] == str(t.number) and run.data.tags["study"] == STUDY
            for key in ("test_metric", "val_metric", "coded_bytes", "sparsity", "bits", "run_key"):
                assert t.user_attrs[key] is not None, key
            assert t.values == [t.user_attrs["val_metric"], t.user_attrs["coded_bytes"]]
            assert t.user_attrs["bits"] == t.params["bits"]


def test_parallel_workers_share_one_study_and_parent_run(workdir, capsys):
    assert cli.main([*ARGS, "--trials", "4", "--workers", "2", *stores(workdir)]) == 0
    study = load(f"sqlite:///{workdir}/optuna.db")
    assert states(study).get("COMPLETE") == 4 and states(study).get("FAIL", 0) == 0
    check_nested(study, f"sqlite:///{workdir}/mlflow.db")
    import mlflow

    assert mlflow.get_run(study.user_attrs[search.PARENT_ATTR]).info.status == "FINISHED"
    out = capsys.readouterr().out
    assert "Pareto front (" in out and "4 trials (4 complete, 0 failed)" in out
    assert len(search.pareto_rows(study)) == len(search.pareto_trials(study)) >= 1
    from benchmarks.tables import write_tables

    assert write_tables("digits", f"sqlite:///{workdir}/mlflow.db") is None, "no grid rows: trials and parent left out"


def _postgres_admin():
    """A psycopg2 connection (autocommit) to the local server, trying users postgres then root."""
    import psycopg2

    errors = []
    for user in ("postgres", "root"):
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=5432, user=user, dbname="test", connect_timeout=3)
            conn.autocommit = True
            return conn, user
        except psycopg2.Error as e:
            errors.append(f"{user}: {e}".strip())
    pytest.skip(f"no PostgreSQL answers on 127.0.0.1:5432 ({'; '.join(errors)})")


@pytest.fixture()
def postgres_dbs():
    """Two fresh databases (Optuna, MLflow) for this test run, dropped afterwards."""
    conn, user = _postgres_admin()
    names = [f"ecqx_search_{uuid.uuid4().hex[:8]}_{kind}" for kind in ("optuna", "mlflow")]
    with conn.cursor() as cur:
        for name in names:
            cur.execute(f"CREATE DATABASE {name}")
    try:
        yield [f"postgresql://{user}@127.0.0.1:5432/{name}" for name in names]
    finally:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.close()


@pytest.mark.postgres
def test_two_machines_share_a_postgres_study(tmp_path, postgres_dbs):
    optuna_url, mlflow_url = (search.db_url(url) for url in postgres_dbs)  # SQLAlchemy 2.1 needs the driver
    argv = [
        sys.executable,
        "-m",
        "benchmarks.cli",
        *ARGS,
        "--trials",
        "4",
        "--storage",
        optuna_url,
        "--tracking-uri",
        mlflow_url,
    ]
    procs = []
    for machine in ("m1", "m2"):  # own folders: own caches and logs, as on two machines
        (tmp_path / machine).mkdir()
        log = (tmp_path / machine / "log.txt").open("w")
        procs.append(subprocess.Popen(argv, cwd=tmp_path / machine, stdout=log, stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=240) for p in procs]
    logs = [(tmp_path / m / "log.txt").read_text() for m in ("m1", "m2")]
    assert codes == [0, 0], "\n\n".join(logs)
    study = load(optuna_url)
    assert states(study).get("COMPLETE") == 4 and states(study).get("FAIL", 0) == 0, states(study)
    assert all("trial" in log for log in logs), "both machines ran trials"
    check_nested(study, mlflow_url)


def _fit_failing_at(call: int, exc: BaseException, monkeypatch) -> None:
    real_fit, calls = runner.fit, {"train": 0}

    def flaky_fit(*args, **kwargs):
        if kwargs.get("stage") == "train":
            calls["train"] += 1
            if calls["train"] == call:
                raise exc
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runner, "fit", flaky_fit)


def _frozen(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, t.params, t.values) for t in study.trials]


def test_killed_search_resumes_the_same_study(workdir, monkeypatch):
    _fit_failing_at(2, KeyboardInterrupt("simulated kill"), monkeypatch)
    assert cli.main([*ARGS, "--trials", "3", *stores(workdir)]) == 130
    study = load(f"sqlite:///{workdir}/optuna.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs["error"] == "KeyboardInterrupt: simulated kill"
    before = _frozen(study)
    monkeypatch.undo()
    monkeypatch.chdir(workdir)
    assert cli.main([*ARGS, "--trials", "3", *stores(workdir)]) == 0
    study = load(f"sqlite:///{workdir}/optuna.db")
    assert _frozen(study)[:2] == before and states(study) == {"COMPLETE": 2, "FAIL": 1}
    assert cli.main([*ARGS, "--trials", "4", *stores(workdir)]) == 0, "a larger budget continues the study"
    study = load(f"sqlite:///{workdir}/optuna.db")
    assert _frozen(study)[:2] == before and states(study) == {"COMPLETE": 3, "FAIL": 1}
    check_nested(study, f"sqlite:///{workdir}/mlflow.db", statuses=("FINISHED", "KILLED"))


def test_failing_trial_is_recorded_and_the_budget_still_reached(workdir, monkeypatch, capsys):
    _fit_failing_at(1, RuntimeError("boom"), monkeypatch)
    assert cli.main([*ARGS, "--trials", "3", *stores(workdir)]) == 0
    study = load(f"sqlite:///{workdir}/optuna.db")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[0].user_attrs["error"] == "RuntimeError: boom"
    check_nested(study, f"sqlite:///{workdir}/mlflow.db", statuses=("FINISHED", "FAILED"))
    assert "trial 0 failed: RuntimeError: boom" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test's own ask() plays the dead worker
def test_trial_of_a_dead_worker_turns_fail_and_the_budget_is_kept(workdir, monkeypatch):
    for module, name, value in (
        (storage_module, "HEARTBEAT_S", 1),
        (storage_module, "GRACE_S", 2),
        (search, "POLL_S", 0.2),
    ):
        monkeypatch.setattr(module, name, value)
    assert cli.main([*ARGS, "--trials", "1", *stores(workdir)]) == 0
    storage = search.open_storage(f"sqlite:///{workdir}/optuna.db")
    dead = optuna.load_study(study_name=STUDY, storage=storage).ask()  # a worker killed mid-trial (kill -9)
    storage.record_heartbeat(dead._trial_id)
    assert cli.main([*ARGS, "--trials", "3", *stores(workdir)]) == 0
    study = load(f"sqlite:///{workdir}/optuna.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert "error" not in study.trials[1].user_attrs  # no exception: the worker just stopped


def test_a_trial_beyond_the_budget_is_pruned_before_it_runs():
    study = optuna.create_study(directions=search.DIRECTIONS)
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(values=[0.5, 100.0]))
    other_worker, late = study.ask(), study.ask()  # two workers asked at once for the last of 3 trials
    search._check_budget(other_worker, 3)
    with pytest.raises(optuna.TrialPruned):
        search._check_budget(late, 3)
    assert late.user_attrs["surplus"] is True


def test_sampler_is_reproducible_and_workers_differ():
    space = search_space.load_space("ecqx", "digits")

    def params(seed: int, n: int = 12) -> list[dict]:
        study = optuna.create_study(directions=search.DIRECTIONS, sampler=search.TrialSeededSampler(seed, 4))
        study.optimize(
            lambda t: (sum(float(search_space.suggest(t, k, d)) for k, d in space.items()), t.params["bits"]),
            n_trials=n,
        )
        return [t.params for t in study.trials]

    a = params(0)
    assert a == params(0), "same seed, same trials (TPE after 4 random ones)"
    assert a != params(1) and len({str(p) for p in a}) == len(a)


def test_every_method_has_a_valid_space_and_bad_input_is_one_line(workdir, capsys):
    for method in ("ecqx", "ecq", "uniform_qat", "magnitude"):
        space = search_space.load_space(method, "digits")
        assert "train.lr" in space and "bits" in space
        assert search.resolve(search.SearchSpec("digits", method, 1)).space.keys() == space.keys()
    fixed = search.resolve(search.SearchSpec("digits", "ecqx", 1, overrides=["params.bits=4", "train.lr=0.01"]))
    assert "bits" not in fixed.space and "train.lr" not in fixed.space
    assert fixed.config("ecqx", {"Lambda": 0.5}).params.bits == 4
    with pytest.raises(ConfigError, match="Lambda: `low <= high` must hold"):
        search_space.parse_param("Lambda", {"type": "float", "low": 2.0, "high": 1.0}, "x.yaml")
    bad = workdir / "bad.yaml"
    bad.write_text("space:\n  params.nope: {type: float, low: 0.1, high: 1.0}\n")
    assert cli.main([*ARGS, "--trials", "2", "--space", str(bad), *stores(workdir)]) == 2
    assert "unknown key(s) nope" in capsys.readouterr().err
    assert not (workdir / "optuna.db").exists(), "bad input fails before any study is created"
