"""A sweep's Optuna study: where every trial is recorded, claimed by exactly one worker, and
handed back for another worker to finish when its worker stops or is lost.

Any number of `mnist-lit sweep` processes on one storage (a SQLite file on one machine, a
database server for several) share the trials out. A grid's trials are all stored as waiting
when the study is created; a worker claims one by moving it from waiting to running, which the
storage lets only one worker do. Running trials send a heartbeat; one whose heartbeat stops
(machine lost, SIGKILL) is failed by the next worker that looks and queued again as a copy
with the same parameters, which resumes from the trial's last.ckpt.
"""

import os
import re
import socket
import threading
import time
import uuid
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import (
    BaseStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
    fail_stale_trials,
)
from optuna.trial import TrialState

from mnist_lit.sweeps.file import SweepFile
from mnist_lit.sweeps.storage import HEARTBEAT_SECONDS, StorageError, retry

SETUP_SECONDS = 120  # how long a second worker waits for the first to store the grid
STUDY_FILE = "study.txt"  # in a sweep's folder: the study its runs belong to


def open_study(storage: BaseStorage, name: str, sweep: SweepFile, flags: list) -> optuna.Study:
    """The study `name`, created with the sweep's trials, or loaded and checked to be the same
    sweep (file, configs and the trials' common `flags`); creating a study succeeds for one
    worker only, so the grid is stored once. A worker that finds the grid half-stored by one
    that stopped (Ctrl-C while storing) stores the rest."""
    expected = {**sweep.fingerprint(), "flags": flags}
    sampler = optuna.samplers.TPESampler()  # unseeded: seeded workers would suggest alike
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction="maximize", sampler=sampler
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        ready = wait_until_ready(study)
        if "sweep" in study.user_attrs:
            check_same_sweep(study, sweep.path, expected)
        if ready:
            return study
    store_trials(study, sweep, expected)
    return study


def store_trials(study: optuna.Study, sweep: SweepFile, expected: dict) -> None:
    """The sweep's record and its grid's trials, those not stored yet, as waiting trials."""
    if "started" not in study.user_attrs:
        now = datetime.now().isoformat(sep=" ", timespec="seconds")
        # its runs are marked with it (claim_folder): unique, and readable in a message
        study.set_user_attr("started", f"{now} by {worker_id()} ({uuid.uuid4().hex[:8]})")
    if "sweep" not in study.user_attrs:
        study.set_user_attr("sweep", expected)
        # the files themselves, for whoever reads the study alone (optuna-dashboard)
        study.set_user_attr("sweep_file", sweep.path.read_text())
        for name, config in sweep.configs.items():
            study.set_user_attr(f"config/{name}", config.read_text())
    stored = [trial.params for trial in study.get_trials(deepcopy=False)]
    for setting in sweep.grid_settings() if not sweep.is_search else []:
        for seed in sweep.seeds:
            if (params := {**setting, "seed": seed}) not in stored:
                add_waiting(study, params, grid_distributions(sweep))
    study.set_user_attr("ready", True)


def claim_folder(folder: Path, study: optuna.Study) -> None:
    """A sweep folder's runs belong to the study that started them (its STUDY_FILE says which):
    a new study under an old folder (its optuna.db deleted, another --storage) would otherwise
    continue the old runs under its own settings and summarise them as fresh."""
    started = study.user_attrs.get("started") or f"{study.study_name} #{study._study_id}"
    marker = folder / STUDY_FILE
    if not marker.exists():
        created_here = f" by {worker_id()} (" in started
        if created_here and any(path.is_dir() for path in folder.iterdir()):
            raise StorageError(
                f"{folder} holds the runs of an earlier sweep whose study is not in this storage "
                "(its optuna.db deleted, or another --storage): this sweep would continue them "
                f"under its own settings. Choose another --name or --root, or move {folder} away"
            )
        written = folder / f".{STUDY_FILE}.{os.getpid()}"
        written.write_text(started + "\n")
        with suppress(FileExistsError):  # another worker of this sweep was first
            os.link(written, marker)  # whole or not at all
        written.unlink()
    recorded = marker.read_text().strip()
    if recorded != started:
        raise StorageError(
            f"{folder} holds the runs of the sweep study started {recorded}, not of this one "
            f"(started {started}): this sweep would continue them under its own settings. "
            f"Choose another --name or --root, or move {folder} away"
        )


def grid_distributions(sweep: SweepFile) -> dict[str, Any]:
    choices = {k: [s[k] for s in sweep.grid_settings()] for k in sweep.grid_settings()[0]}
    choices["seed"] = sweep.seeds
    return {
        key: optuna.distributions.CategoricalDistribution(list(dict.fromkeys(values)))
        for key, values in choices.items()
    }


def add_waiting(study: optuna.Study, params: dict[str, Any], distributions: dict) -> None:
    trial = optuna.trial.create_trial(
        state=TrialState.WAITING, params=params, distributions=distributions
    )
    study.add_trial(trial)


def wait_until_ready(study: optuna.Study) -> bool:
    """True once the worker that created the study has stored its trials; False when that
    worker stopped before it had (its process is gone, or it is silent for SETUP_SECONDS)."""
    deadline = time.monotonic() + SETUP_SECONDS
    while not study.user_attrs.get("ready"):
        if creator_gone(study) or time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def creator_gone(study: optuna.Study) -> bool:
    found = re.search(r" by (.+):(\d+) \(", study.user_attrs.get("started", ""))
    return bool(found) and found[1] == socket.gethostname() and not process_alive(int(found[2]))


def check_same_sweep(study: optuna.Study, path, now: dict) -> None:
    stored = study.user_attrs["sweep"]
    for part in now:
        if stored.get(part) != now[part]:
            raise StorageError(
                f"{path} and its flags no longer match the sweep {study.study_name!r} stored "
                f"earlier: its {part} were {stored.get(part)}, now {now[part]} (a config's "
                "value is its content's hash). Restore them, or start a new sweep with --name"
            )


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_waiting(study: optuna.Study, storage: BaseStorage) -> optuna.Trial | None:
    """A waiting trial, now running for this worker; None when none is left. Moving a trial
    from waiting to running succeeds for one worker only."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                return mark_mine(study, storage, trial._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished by another worker since the list was read
    return None


def ask_new(study: optuna.Study, storage: BaseStorage, sweep: SweepFile) -> optuna.Trial:
    """A new search trial with its setting sampled (a queued retry first, if any)."""
    distributions = dict(sweep.space)
    if len(sweep.configs) > 1:
        distributions["config"] = optuna.distributions.CategoricalDistribution(list(sweep.configs))
    trial = study.ask(fixed_distributions=distributions)
    return mark_mine(study, storage, trial._trial_id)


def mark_mine(study: optuna.Study, storage: BaseStorage, trial_id: int) -> optuna.Trial:
    if isinstance(storage, RDBStorage):  # a trial without heartbeats is never found stale
        storage.record_heartbeat(trial_id)
    storage.set_trial_user_attr(trial_id, "worker", worker_id())
    if job := slurm_job():
        storage.set_trial_user_attr(trial_id, "slurm_job", job)
    return optuna.Trial(study, trial_id)


def slurm_job() -> str | None:
    """This worker's SLURM job (an array's task: JOBID_TASK) and step (.STEP), which a requeue
    runs again under the same names; workers started by several `srun`s of one job differ."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = "_".join(array) if all(array) else os.environ.get("SLURM_JOB_ID")
    step = os.environ.get("SLURM_STEP_ID")
    return f"{job}.{step}" if job and step else job


def retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of trials that were handed back and queued again as a copy."""
    return {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}


def settings_started(study: optuna.Study) -> int:
    """Settings a search has taken on, each counted once however often it was retried."""
    trials = study.get_trials(deepcopy=False)
    return len(trials) - len(retried(trials))


def hand_back(study: optuna.Study, storage: BaseStorage, trial_id: int, reason: str) -> None:
    """Fail an unfinished trial and queue a copy with its parameters and finished seeds."""
    try:
        storage.set_trial_user_attr(trial_id, "stopped", reason)
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # another worker handed it back first
    retry(study, storage.get_trial(trial_id))


def recover_lost(study: optuna.Study, storage: BaseStorage) -> None:
    """Hand back running trials whose worker is gone: silent past the grace period (any
    machine, storages with heartbeats), a dead process on this machine, or an earlier run of
    this worker's SLURM job (killed, then requeued: SLURM runs a job once at a time)."""
    fail_stale_trials(study)
    host, me, job = socket.gethostname(), worker_id(), slurm_job()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        worker_host, _, pid = worker.rpartition(":")
        here = worker_host == host and pid.isdigit()
        if here and not process_alive(int(pid)):
            hand_back(study, storage, trial._trial_id, f"its worker (pid {pid}) stopped")
        elif job and trial.user_attrs.get("slurm_job") == job and worker != me and not here:
            hand_back(study, storage, trial._trial_id, f"its SLURM job {job} was requeued")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Heartbeat:
    """Tells the storage, every HEARTBEAT_SECONDS while a trial runs, that its worker lives."""

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        if not isinstance(self.storage, RDBStorage):  # a journal: see storage.py
            return
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            self.storage.record_heartbeat(self.trial_id)

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stopped.set()
        self.thread.join()
