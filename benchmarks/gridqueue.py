"""A suite's grid as a work queue in Optuna's RDB storage (the storage searches use).

Every grid point is an enqueued Optuna trial (fixed param ``index``: its position in the grid; user
attr ``index`` too). Any number of processes, on any number of machines sharing the storage, pop
WAITING trials atomically (``study.optimize`` -> ``Study.ask``), run the grid point as a tracked MLflow
run and tell the trial COMPLETE. A running trial sends heartbeats; one whose worker died turns FAIL
(``fail_stale_trials``: after ``storage.GRACE_S`` seconds, or at once when its owner process on this
host is gone) and Optuna's ``RetryHeartbeatStaleTrialCallback`` (formerly ``RetryFailedTrialCallback``)
enqueues it again. MLflow stays the record of what is done: a grid point whose run key has a
FINISHED run is skipped, so a re-enqueued point never runs twice.

The queue study is named by the grid (identity of every config, in order) and the tracking URI:
processes started with the same suite, overrides and stores share it; a changed grid gets a new one.
Opening it (and enqueueing every grid point with no WAITING or RUNNING trial) happens under the
store-creation lock, so processes started together enqueue each point once.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from benchmarks.config import RunConfig, identity_fields, stable_hash
from benchmarks.procs import owner, owner_gone
from benchmarks.storage import open_storage
from benchmarks.storelock import creating

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat API, retries
POLL_S = 2.0  # seconds between looks at the queue while other workers run its last points
MAX_RETRY = 3  # re-enqueues of a grid point whose worker died (heartbeat stale or process gone)

Report = Callable[[int, int, RunConfig, dict[str, Any]], None]


@dataclass(frozen=True)
class Queue:
    """Where a grid's queue lives: the Optuna storage URL and the study name."""

    storage: str
    name: str


def queue_for(cfgs: list[RunConfig], storage: str, label: str, tracking_uri: str | None) -> Queue:
    """The queue of this grid (``label``: the suite's name) in ``storage``."""
    identity = stable_hash({"grid": [identity_fields(c) for c in cfgs], "tracking": tracking_uri or ""}, 12)
    return Queue(storage, f"grid/{label}/{identity}")


def _storage(q: Queue) -> optuna.storages.RDBStorage:
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    return open_storage(q.storage, stale_callback=retry)


def _load(q: Queue, storage) -> optuna.Study:
    return optuna.load_study(study_name=q.name, storage=storage, sampler=optuna.samplers.RandomSampler(0))


def reap(study: optuna.Study, storage) -> None:
    """FAIL (and re-enqueue, through the storage's retry callback) the RUNNING trials of dead
    workers: heartbeat older than the grace period, or owner process on this host gone."""
    optuna.storages.fail_stale_trials(study)
    retry = storage.get_heartbeat_stale_trial_callback()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not owner_gone(t.user_attrs):
            continue
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another process reaped it first
            continue
        if retry is not None:
            retry(study, copy.deepcopy(storage.get_trial(t._trial_id)))


def open_queue(q: Queue, n: int) -> optuna.Study:
    """Create or load the queue and enqueue each of the ``n`` grid points that has no WAITING or
    RUNNING trial (a finished point is enqueued again and then skipped by its FINISHED MLflow run;
    a failed one runs again)."""
    storage = _storage(q)
    with creating(q.storage, "queue-" + stable_hash(q.name, 12)):
        study = optuna.create_study(
            storage=storage, study_name=q.name, load_if_exists=True, sampler=optuna.samplers.RandomSampler(0)
        )
        reap(study, storage)
        live = {
            t.user_attrs.get("index")
            for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
        }
        for i in range(n):
            if i not in live:
                study.enqueue_trial({"index": i}, user_attrs={"index": i})
    return study


def progress(q: Queue, n: int) -> tuple[list[int], list[int]]:
    """(grid indices whose latest trial is COMPLETE, the others) of the queue."""
    latest: dict[int, optuna.trial.FrozenTrial] = {}
    storage = _storage(q)
    for t in _load(q, storage).get_trials(deepcopy=False):
        i = t.user_attrs.get("index")
        if i is not None and t.state != TrialState.PRUNED and (i not in latest or t.number > latest[i].number):
            latest[i] = t
    done = [i for i in range(n) if i in latest and latest[i].state == TrialState.COMPLETE]
    return done, [i for i in range(n) if i not in done]


class GridObjective:
    """One popped trial: run its grid point (unless another live trial of the same point came first)."""

    def __init__(self, cfgs: list[RunConfig], run: Callable[[int, RunConfig], dict[str, Any]], report) -> None:
        self.cfgs, self.run, self.report = cfgs, run, report
        self.started = time.monotonic()
        self.ran = 0

    def __call__(self, trial: optuna.Trial) -> float:
        i = trial.user_attrs.get("index")
        if i is None:  # the queue was empty when this worker asked: Optuna made a fresh trial
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("no grid point left")
        trial.suggest_int("index", 0, len(self.cfgs) - 1)  # the enqueued fixed value
        for k, v in owner().items():
            trial.set_user_attr(k, v)
        earlier = [
            t
            for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get("index") == i and t.number < trial.number
        ]
        if earlier:  # two copies of a point popped at once: the older trial runs it
            trial.set_user_attr("duplicate_of", earlier[0].number)
            raise optuna.TrialPruned(f"grid point {i} runs in trial {earlier[0].number}")
        record = self.run(i, self.cfgs[i])
        trial.set_user_attr("mlflow_run_id", record.get("mlflow_run_id"))
        trial.set_user_attr("skipped", bool(record.get("skipped")))
        self.ran += not record.get("skipped")
        if self.report is not None:
            done = len(progress_done(trial.study) | {i})  # this point's trial turns COMPLETE on return
            self.report(done, len(self.cfgs), self.cfgs[i], record)
            print(eta_line(done, len(self.cfgs), self.ran, time.monotonic() - self.started), flush=True)
        return float(i)


def progress_done(study: optuna.Study) -> set[int]:
    """Grid indices with a COMPLETE trial."""
    return {t.user_attrs.get("index") for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}


def eta_line(done: int, total: int, ran: int, seconds: float) -> str:
    """``  progress d/n, r runs/min in this process, ETA ~m min`` (rate from the runs this process ran)."""
    if ran == 0 or seconds <= 0:
        return f"  progress {min(done, total)}/{total}"
    rate = ran / seconds * 60  # runs per minute
    return (
        f"  progress {min(done, total)}/{total}, {rate:.2f} runs/min here, ETA ~{max(total - done, 0) / rate:.0f} min"
    )


def work(q: Queue, cfgs: list[RunConfig], run: Callable[[int, RunConfig], dict[str, Any]], report=None) -> None:
    """Pop and run grid points until the queue has no WAITING trial and no live RUNNING one."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a line per run comes from ``report``; errors re-raise
    storage = _storage(q)
    study = _load(q, storage)
    objective = GridObjective(cfgs, run, report)
    while True:
        reap(study, storage)
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if waiting:
            study.optimize(objective, n_trials=1, catch=())
            continue
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            return
        time.sleep(POLL_S)


def records(q: Queue, n: int) -> list[dict[str, Any]]:
    """Per grid index: ``{"mlflow_run_id", "skipped"}`` of its latest COMPLETE trial (empty if none)."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    storage = _storage(q)
    for t in sorted(
        _load(q, storage).get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number
    ):
        i = t.user_attrs.get("index")
        if i is not None and 0 <= i < n:
            out[i] = {"mlflow_run_id": t.user_attrs.get("mlflow_run_id"), "skipped": t.user_attrs.get("skipped", False)}
    return out
