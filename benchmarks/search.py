"""Trade-off search: one multi-objective Optuna study per (suite, method).

Objectives: maximise the validation metric (``val_accuracy`` / ``val_map``, a fraction) and minimise
the coded size (``coded_bytes``, bytes of the verified NNR bitstream). Search spaces are YAML under
``configs/searches/<method>.yaml``. Every trial is a ``tracked_run`` nested under one MLflow parent
run per study (tags ``study``, ``role=study``, ``valid=false``: not a result row) in the suite's
experiment; the suite tables leave nested runs out, the reports and leaderboard count them.

The study lives in an RDB storage (default ``sqlite:///runs/optuna.db``; a PostgreSQL URL lets several
machines share it) with heartbeats, so the trial of a killed worker turns FAIL. "N trials" means the
study ends with N COMPLETE-or-FAIL trials across workers and restarts: a worker starts a trial only
while finished + running trials < N; a trial that still overshoots (two workers asking at the same
moment) is PRUNED with user attr ``surplus``.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import time
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmarks import config as C
from benchmarks.config import ConfigError
from benchmarks.gridgate import check_grid_fp
from benchmarks.procs import owner
from benchmarks.runs import connect, db_url, experiment_name
from benchmarks.search_space import SearchSpec, Setup, resolve, suggest
from benchmarks.storage import DEFAULT_STORAGE, TrialSeededSampler, open_storage, retry

DIRECTIONS = ("maximize", "minimize")  # (validation metric, coded bytes)
DONE = (TrialState.COMPLETE, TrialState.FAIL)
POLL_S = 3.0  # seconds between looks at the study while other workers finish the last trials
NO_ERROR = "no error recorded: its worker stopped (killed?)"  # a FAIL trial failed by its stale heartbeat
PARENT_ATTR, SETUP_ATTR = "mlflow_parent_run_id", "setup"  # study user attrs
ATTRS = (
    "mlflow_run_id",
    "run_key",
    "metric",
    "val_metric",
    "test_metric",
    "coded_bytes",
    "size_source",
    "sparsity",
    "bits",
    "compression_ratio",
)  # trial user attrs (metrics are fractions, sizes bytes)

# --- the study and its MLflow parent run ---


def open_study(spec: SearchSpec, setup: Setup) -> tuple[optuna.Study, str]:
    """Create or load the study; returns it with its MLflow parent run id. The process whose
    ``create_study`` wins creates the parent run and stores its id as a study user attr; the others
    wait for that attr (and create the parent themselves only if its creator died first)."""
    storage, sampler = open_storage(spec.storage), TrialSeededSampler(spec.seed)
    identity = json.loads(json.dumps({"suite": setup.suite, "method": spec.method, "fixed": setup.fixed}, default=str))
    try:
        study = optuna.create_study(
            storage=storage, study_name=setup.study_name, directions=DIRECTIONS, sampler=sampler
        )
        study.set_user_attr(SETUP_ATTR, identity)
        return study, _create_parent(spec, setup, study)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=setup.study_name, storage=storage, sampler=sampler)
    deadline = time.monotonic() + 300.0
    while (parent := study.user_attrs.get(PARENT_ATTR)) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if (stored := study.user_attrs.get(SETUP_ATTR)) not in (None, identity):
        raise ConfigError(
            f"study {setup.study_name!r} was started with {stored}, not {identity}; "
            "pass --study-name to start another study"
        )
    return study, parent or _create_parent(spec, setup, study)


def _create_parent(spec: SearchSpec, setup: Setup, study: optuna.Study) -> str:
    """Create the study's MLflow parent run (tags study=<name>, role=study) and store its id."""
    from sqlalchemy.engine import make_url

    from benchmarks.tracking import setup as setup_mlflow

    exp = retry(lambda: setup_mlflow(spec.tracking_uri, experiment_name(setup.suite)))
    tags = {
        "study": setup.study_name,
        "role": "study",
        "valid": "false",
        "suite": setup.suite,
        "method": spec.method,
        "optuna_storage": make_url(spec.storage).render_as_string(hide_password=True),
        **owner(),
    }
    run = _client(spec.tracking_uri).create_run(exp, run_name=f"search {setup.study_name}", tags=tags)
    study.set_user_attr(PARENT_ATTR, run.info.run_id)
    return run.info.run_id


def _client(tracking_uri: str | None):
    """An MlflowClient of the tracking store (also made MLflow's current store)."""
    import mlflow

    connect(tracking_uri)
    return mlflow.MlflowClient()


# --- trials ---


class Objective:
    """One trial: sample the space, run the config as a nested MLflow run, return (val, bytes)."""

    def __init__(self, spec: SearchSpec, setup: Setup, parent_run_id: str) -> None:
        self.spec, self.setup, self.parent_run_id = spec, setup, parent_run_id
        self.run_id: str | None = None  # the MLflow run of the current trial, once started

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        _check_budget(trial, self.spec.trials)
        values = {k: suggest(trial, k, d) for k, d in self.setup.space.items()}
        if (same := _same_params(trial)) is not None:
            print(f"  [trial {trial.number}] same params as trial {same.number}: its run is reused", flush=True)
            trial.set_user_attr("reused_from", same.number)
            return _store(trial, same.user_attrs)
        print(f"[{self.setup.study_name}] trial {trial.number}: {values}", flush=True)
        self.run_id = None
        try:
            record = self._run(self.setup.config(self.spec.method, values), trial.number)
        except BaseException as e:  # recorded on the trial, then re-raised (Optuna marks the trial FAIL)
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
            if self.run_id is not None:
                trial.set_user_attr("mlflow_run_id", self.run_id)
            raise
        return _store(trial, _attrs(record))

    def _run(self, cfg: C.RunConfig, number: int) -> dict[str, Any]:
        import mlflow

        from benchmarks.tracking import tracked_run

        def log(line: str) -> None:  # progress of the run; notes its MLflow run id (for failures)
            if (active := mlflow.active_run()) is not None:
                self.run_id = active.info.run_id
            print(f"  [trial {number}] {line.strip()}", flush=True)

        record = tracked_run(
            cfg,
            data_dir=self.spec.data_dir,
            tracking_uri=self.spec.tracking_uri,
            parent_run_id=self.parent_run_id,
            skip_finished=False,
            log=log,
        )
        mlflow.MlflowClient().set_tag(record["mlflow_run_id"], "study", self.setup.study_name)
        mlflow.MlflowClient().set_tag(record["mlflow_run_id"], "trial", str(number))
        return record


def _check_budget(trial: optuna.Trial, n: int) -> None:
    """PRUNE a trial that would exceed the budget: ``n`` earlier trials are done or running."""
    earlier = [
        t for t in trial.study.get_trials(deepcopy=False, states=(*DONE, TrialState.RUNNING)) if t.number < trial.number
    ]
    if len(earlier) >= n:
        trial.set_user_attr("surplus", True)
        raise optuna.TrialPruned(f"the budget of {n} trials is taken")


def _same_params(trial: optuna.Trial) -> FrozenTrial | None:
    """An earlier COMPLETE trial of the study with exactly these params (its run is reused)."""
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number != trial.number and t.params == trial.params and "mlflow_run_id" in t.user_attrs:
            return t
    return None


def _attrs(record: dict[str, Any]) -> dict[str, Any]:
    """The trial user attrs ``ATTRS`` from a run record."""
    metric = "accuracy" if "val_accuracy" in record else "map"
    size = "coded_bytes" if "coded_bytes" in record else "entropy_bound_bytes"  # without verify_coding
    return {
        "mlflow_run_id": record["mlflow_run_id"],
        "run_key": record["run_key"],
        "metric": metric,
        "val_metric": record[f"val_{metric}"],
        "test_metric": record[f"test_{metric}"],
        "coded_bytes": record[size],
        "size_source": size,
        "sparsity": record["sparsity"],
        "bits": record["bits"],
        "compression_ratio": record.get("compression_ratio"),
    }


def _store(trial: optuna.Trial, attrs: dict[str, Any]) -> tuple[float, float]:
    """Set the user attrs ``ATTRS``; returns the objective values (val metric, coded bytes)."""
    for key in ATTRS:
        trial.set_user_attr(key, attrs.get(key))
    return float(attrs["val_metric"]), float(attrs["coded_bytes"])


# --- workers ---


def counts(study: optuna.Study) -> tuple[int, int]:
    """(COMPLETE + FAIL trials, RUNNING trials) of the study."""
    trials = study.get_trials(deepcopy=False, states=(*DONE, TrialState.RUNNING))
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return len(trials) - running, running


def run_trials(spec: SearchSpec, setup: Setup, study: optuna.Study, parent: str) -> optuna.Study:
    """Run trials until the study holds ``spec.trials`` COMPLETE + FAIL trials, waiting for other
    workers' last trials (a dead worker's trial turns FAIL after ``GRACE_S`` seconds)."""
    objective, progress = Objective(spec, setup, parent), functools.partial(_progress, spec.trials)
    while True:
        optuna.storages.fail_stale_trials(study)
        done, running = counts(study)
        if done >= spec.trials:
            return study
        if done + running >= spec.trials:
            time.sleep(POLL_S)
            continue
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[progress])


def _progress(n: int, study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna callback: one line per finished trial (done/N, Pareto front size, best values)."""
    if trial.state not in DONE:
        return
    front = pareto_trials(study)
    what = (
        f"val {trial.values[0]:.4f}, {trial.values[1]:.0f} bytes"
        if trial.state == TrialState.COMPLETE
        else f"FAIL ({trial.user_attrs.get('error', NO_ERROR)})"
    )
    best = (
        f", best val {max(t.values[0] for t in front):.4f}, smallest {min(t.values[1] for t in front):.0f} bytes"
        if front
        else ""
    )
    print(
        f"[{study.study_name}] trial {trial.number}: {what} | {counts(study)[0]}/{n} done, "
        f"Pareto front {len(front)}{best}",
        flush=True,
    )


def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # failures are still logged, with traceback
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat API


def work(spec: SearchSpec, threads: int, parent: int | None = None) -> None:
    """Entry point of a spawned worker process (dies with ``parent``): ``threads`` torch CPU threads,
    then trials."""
    import torch

    from benchmarks.procs import die_with_parent, raise_on_signals

    if parent is not None:
        die_with_parent(parent)
    raise_on_signals()
    _quiet_optuna()
    torch.set_num_threads(threads)
    setup = resolve(spec)
    try:
        run_trials(spec, setup, *open_study(spec, setup))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


# --- results ---


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The COMPLETE trials on the Pareto front (no other trial has a higher validation metric and
    fewer coded bytes), smallest first."""
    return sorted(study.best_trials, key=lambda t: (t.values[1], -t.values[0], t.number))


def pareto_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """The Pareto trials as flat rows for reports: trial number, params and the ``ATTRS``
    (metrics as fractions, coded bytes, sparsity as a fraction, bits, MLflow run id)."""
    return [
        {"trial": t.number, "params": dict(t.params), **{k: t.user_attrs.get(k) for k in ATTRS}}
        for t in pareto_trials(study)
    ]


def summary(study: optuna.Study) -> str:
    """A readable end-of-search report: counts, the Pareto trials with their params, failures."""
    trials = study.get_trials(deepcopy=False, states=DONE)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    rows = pareto_rows(study)
    lines = [
        f"study {study.study_name}: {len(trials)} trials ({len(trials) - len(failed)} complete, "
        f"{len(failed)} failed); MLflow parent run {study.user_attrs.get(PARENT_ATTR)}",
        f"Pareto front ({len(rows)} trials, val {rows[0]['metric'] if rows else 'metric'} up, coded bytes down):",
        f"{'trial':>5}  {'val %':>6}  {'test %':>6}  {'bytes':>8}  {'sparsity %':>10}  {'bits':>4}  params",
    ]
    for r in rows:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        lines.append(
            f"{r['trial']:>5}  {100 * r['val_metric']:>6.2f}  {100 * r['test_metric']:>6.2f}  "
            f"{r['coded_bytes']:>8.0f}  {100 * r['sparsity']:>10.1f}  {r['bits']!s:>4}  {params}"
        )
    return "\n".join(lines + [f"trial {t.number} failed: {t.user_attrs.get('error', NO_ERROR)}" for t in failed])


def finish_parent(study: optuna.Study, tracking_uri: str | None) -> None:
    """Close the parent run (FINISHED) with the trial counts and the Pareto front (pareto.json)."""
    client, parent = _client(tracking_uri), study.user_attrs[PARENT_ATTR]
    done, rows = counts(study)[0], pareto_rows(study)
    client.log_metric(parent, "trials", done, step=done)
    client.log_metric(parent, "pareto_size", len(rows), step=done)
    client.log_text(parent, json.dumps(rows, indent=2, default=str), "pareto.json")
    client.set_terminated(parent, status="FINISHED")


def _reopen_parent(parent: str, tracking_uri: str | None) -> None:
    """Mark the parent run RUNNING (a resumed search); a clear error if it is not in this store."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        status = client.get_run(parent).info.status
    except MlflowException:
        raise ConfigError(
            f"the study's MLflow parent run {parent} is not in this tracking store; pass the "
            "study's --tracking-uri or another --study-name"
        ) from None
    if status != "RUNNING":
        client.update_run(parent, status="RUNNING")
    for k, v in owner().items():  # this process now owns the study run (closed KILLED if it dies)
        client.set_tag(parent, k, v)


def search(spec: SearchSpec) -> optuna.Study:
    """Run the search: this process plus ``spec.workers - 1`` spawned workers on one study, each
    with ``cores // workers`` torch threads; returns the study once it holds N finished trials."""
    import torch

    _quiet_optuna()
    setup = resolve(spec)  # bad input fails here, before any store is touched
    check_grid_fp([setup.probe(spec.method)], spec.data_dir, spec.tracking_uri)  # weak FP model: no study
    from benchmarks.tracking import close_orphans
    from benchmarks.tracking import setup as setup_mlflow

    close_orphans(setup_mlflow(spec.tracking_uri, experiment_name(setup.suite)))  # runs of killed searches
    study, parent = open_study(spec, setup)
    _reopen_parent(parent, spec.tracking_uri)
    threads = max(1, (os.cpu_count() or 1) // spec.workers)
    print(
        f"[{setup.study_name}] {spec.trials} trials ({counts(study)[0]} done before), {spec.workers} worker(s) x "
        f"{threads} threads, searching {', '.join(setup.space)}",
        flush=True,
    )
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=work, args=(spec, threads, os.getpid())) for _ in range(spec.workers - 1)]
    for p in procs:
        p.start()
    torch.set_num_threads(threads)
    try:
        run_trials(spec, setup, study, parent)
    except BaseException:
        for p in procs:
            p.terminate()  # SIGTERM -> KeyboardInterrupt in the worker: its trial is marked FAIL
        raise
    finally:
        for p in procs:
            p.join()
    finish_parent(study, spec.tracking_uri)
    print(summary(study), flush=True)
    return study


def main(args) -> int:
    """``ecqx-bench search``: 0 when the study holds N finished trials."""
    spec = SearchSpec(
        args.suite,
        args.method,
        args.trials,
        storage=db_url(args.storage or DEFAULT_STORAGE),
        study_name=args.study_name,
        tracking_uri=db_url(args.tracking_uri),
        data_dir=args.data_dir,
        quick=args.quick,
        overrides=list(args.overrides),
        space_path=args.space,
        seed=args.seed,
        workers=args.workers,
    )
    return 0 if counts(search(spec))[0] >= spec.trials else 1
