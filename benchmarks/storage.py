"""Optuna RDB storage shared by searches (and suites' work queues): SQLite file or PostgreSQL URL,
with heartbeats so that a dead worker's trial turns FAIL, and retries on races between processes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna

from benchmarks.runs import RUNS_DIR
from benchmarks.storelock import creating

DEFAULT_STORAGE = f"sqlite:///{RUNS_DIR}/optuna.db"
HEARTBEAT_S = 20  # seconds between heartbeats of a running trial
GRACE_S = 60  # a RUNNING trial without a heartbeat for this long belonged to a dead worker: FAIL


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Multi-objective TPE, re-seeded for every trial from (seed, trial number): a single-worker
    study is reproducible, a resumed one continues as if never stopped, and parallel workers never
    draw the same random numbers (the constant liar keeps their proposals apart)."""

    def __init__(self, seed: int = 0, n_startup_trials: int = 10) -> None:
        self.seed, self.n_startup_trials = seed, n_startup_trials
        self._number, self._inner = -1, optuna.samplers.RandomSampler()

    def _for(self, trial) -> optuna.samplers.BaseSampler:
        if trial.number != self._number:
            seed = (self.seed * 1_000_003 + trial.number) % 2**32
            self._inner = optuna.samplers.TPESampler(
                seed=seed, multivariate=True, constant_liar=True, n_startup_trials=self.n_startup_trials
            )
            self._number = trial.number
        return self._inner

    def infer_relative_search_space(self, study, trial):
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._for(trial).after_trial(study, trial, state, values)


def retry(fn, attempts: int = 6, wait_s: float = 1.0):
    """``fn()``, retried on store errors (processes racing to create the same tables/experiment)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    for i in range(attempts):
        try:
            return fn()
        except (SQLAlchemyError, MlflowException, optuna.exceptions.StorageInternalError):
            if i == attempts - 1:
                raise
            time.sleep(wait_s * (i + 1))


def open_storage(url: str, stale_callback=None) -> optuna.storages.RDBStorage:
    """The Optuna RDB storage at ``url`` with heartbeats (a SQLite file's folder is created);
    ``stale_callback(study, trial)`` runs for each trial failed by a stale heartbeat (a retry)."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 60}}
    with creating(url, "optuna"):  # a fresh database gets its tables from one process only
        return retry(
            lambda: optuna.storages.RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=stale_callback,
            )
        )
