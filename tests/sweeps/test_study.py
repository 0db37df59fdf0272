"""The sweep's Optuna study: each trial claimed once, lost trials handed back and counted once,
a changed sweep refused."""

import os
import subprocess
import threading
from datetime import datetime

import optuna
import pytest
import sqlalchemy
from optuna.storages._rdb.models import TrialHeartbeatModel
from optuna.trial import TrialState

from mnist_lit.sweeps import study as studies
from mnist_lit.sweeps.file import read_sweep_file
from mnist_lit.sweeps.flags import common_flags
from mnist_lit.sweeps.storage import StorageError, open_storage
from mnist_lit.sweeps.summary import summarise
from tests.sweeps.grids import grid_study, sweep_file


def test_grid_is_stored_once_as_waiting_trials(tmp_path):
    sweep, url, storage, study = grid_study(tmp_path)
    again = studies.open_study(open_storage(url), "grid", sweep, [])  # a second worker
    trials = again.get_trials()
    assert len(trials) == 3 * 4 and all(t.state == TrialState.WAITING for t in trials)
    assert {(t.params["model.lr"], t.params["seed"]) for t in trials} == {
        (lr, seed) for lr in (1e-3, 2e-3, 3e-3) for seed in (1, 2, 3, 4)
    }


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_workers_claim_every_trial_exactly_once(tmp_path, kind):
    _, url, _, _ = grid_study(tmp_path, storage=kind)
    claimed: list[int] = []

    def worker() -> None:  # each with its own connection, as separate processes have
        storage = open_storage(url)
        study = optuna.load_study(study_name="grid", storage=storage)
        while (trial := studies.claim_waiting(study, storage)) is not None:
            claimed.append(trial.number)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == list(range(12))


@pytest.mark.parametrize(
    "database",
    ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)],  # a real server
)
def test_workers_starting_together_on_an_empty_database_all_join_one_study(
    tmp_path, database, request
):
    """The first workers of a sweep on a new database create Optuna's tables at the same time."""
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'optuna.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    sweep = read_sweep_file(sweep_file(tmp_path, seeds=[1, 2], grid={"model.lr": [1e-3, 2e-3]}))
    start, studies_opened, errors = threading.Barrier(4), [], []

    def worker() -> None:
        start.wait()
        try:
            storage = open_storage(url)
            studies_opened.append(studies.open_study(storage, "grid", sweep, []))
        except Exception as error:  # noqa: BLE001 (reported by the assertion below)
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(studies_opened) == 4
    assert len(optuna.get_all_study_summaries(studies_opened[0]._storage)) == 1
    assert len(studies_opened[0].get_trials()) == 2 * 2  # the grid stored once


def test_changed_sweep_or_flags_are_refused_naming_what_changed(tmp_path):
    sweep, url, storage, _ = grid_study(tmp_path)
    fewer = read_sweep_file(sweep_file(tmp_path, seeds=[1, 2], grid={"model.lr": [1e-3]}))
    with pytest.raises(StorageError, match=r"its seeds were \[1, 2, 3, 4\], now \[1, 2\]"):
        studies.open_study(storage, "grid", fewer, [])
    with pytest.raises(StorageError, match="its flags were"):
        studies.open_study(storage, "grid", sweep, [["trainer.max_epochs", "1"]])


def dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


def test_a_trial_whose_worker_died_is_handed_back_and_counted_once(tmp_path):
    _, _, storage, study = grid_study(tmp_path, lrs=(1e-3,), seeds=(1, 2))
    trial = studies.claim_waiting(study, storage)
    storage.set_trial_user_attr(trial._trial_id, "worker", f"{studies.worker_id()[:-1]}x")
    studies.recover_lost(study, storage)  # another worker's pid on this host: still running?
    assert study.get_trials()[trial.number].state == TrialState.RUNNING
    host = studies.worker_id().rpartition(":")[0]
    storage.set_trial_user_attr(trial._trial_id, "worker", f"{host}:{dead_pid()}")
    studies.recover_lost(study, storage)
    trials = study.get_trials()
    copy = trials[-1]
    assert trials[trial.number].state == TrialState.FAIL and copy.state == TrialState.WAITING
    assert copy.params == trial.params and len(trials) == 3
    assert studies.settings_started(study) == 2  # the copy stands for the original
    # both seeds finish; the summary counts the handed-back trial once, not as a failure
    for _ in range(2):
        claimed = studies.claim_waiting(study, storage)
        seed = claimed.params["seed"]
        # as earlier versions recorded a seed's run: the summary reads it under today's names
        result = {"seed": seed, "val_acc_best": 0.9, "test_acc": 0.8, "train_seconds": 1.0}
        claimed.set_user_attr(f"run/{seed}", result)
        study.tell(claimed, 0.9)
    summary = summarise(study)
    assert [len(s.runs) for s in summary.settings] == [2] and summary.failed == []
    assert summary.chosen.values("val/acc_best") == [0.9, 0.9]


def test_a_trial_of_an_earlier_run_of_this_slurm_job_is_handed_back(tmp_path, monkeypatch):
    """A worker killed outright (SIGKILL after SLURM's KillWait) leaves its trial running; a
    journal has no heartbeats, but SLURM runs the requeued job once: its trials are lost."""
    _, _, storage, study = grid_study(tmp_path, lrs=(1e-3,), seeds=(1, 2), storage="journal")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    for task in ("0", "1"):  # two workers of the array, on other machines
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", task)
        trial = studies.claim_waiting(study, storage)
        storage.set_trial_user_attr(trial._trial_id, "worker", f"node{task}:4242")
    studies.recover_lost(study, storage)  # task 1, now again: task 0's trial is another's
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs["stopped"] == "its SLURM job 77_1.0 was requeued"
    assert trials[2].params == trials[1].params


def test_a_trial_silent_past_the_grace_period_is_handed_back(tmp_path):
    _, url, _, _ = grid_study(tmp_path, lrs=(1e-3,), seeds=(1,))
    storage = open_storage(url)
    study = optuna.load_study(study_name="grid", storage=storage)
    trial = studies.claim_waiting(study, storage)
    storage.set_trial_user_attr(trial._trial_id, "worker", "another-machine:123")
    studies.recover_lost(study, storage)
    assert study.get_trials()[0].state == TrialState.RUNNING  # its heartbeat is fresh
    # its last heartbeat, as the database records it, set far beyond the grace period
    with storage.engine.begin() as connection:
        update = sqlalchemy.update(TrialHeartbeatModel).values(heartbeat=datetime(2000, 1, 1))
        connection.execute(update)
    studies.recover_lost(study, storage)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].params == trial.params


def test_only_flags_that_describe_the_machine_may_differ_between_workers():
    flags = ["--data.data_dir", "/a", "--trainer.devices=1", "--trainer.max_epochs", "2"]
    other = ["--data.data_dir=/b", "--trainer.max_epochs", "2", "--data.num_workers", "8"]
    assert common_flags(flags) == common_flags(other) == [["trainer.max_epochs", "2"]]
    assert common_flags(["--trainer.max_epochs", "3"]) != common_flags(flags)


def test_a_sweep_folder_belongs_to_the_study_that_started_its_runs(tmp_path):
    folder = tmp_path / "sweeps" / "grid"
    folder.mkdir(parents=True)
    sweep, url, storage, study = grid_study(tmp_path)
    studies.claim_folder(folder, study)
    (folder / "fast,lr=0.001" / "seed_1").mkdir(parents=True)  # its runs begin
    again = studies.open_study(open_storage(url), "grid", sweep, [])  # a second worker
    studies.claim_folder(folder, again)
    # the study is gone (optuna.db deleted) or another --storage: a new study, the old runs
    (tmp_path / "optuna.db").unlink()
    _, _, _, new = grid_study(tmp_path)
    with pytest.raises(StorageError, match="runs of the sweep study started .* not of"):
        studies.claim_folder(folder, new)
    (folder / studies.STUDY_FILE).unlink()  # a folder of an earlier version, never marked
    with pytest.raises(StorageError, match="holds the runs of an earlier sweep"):
        studies.claim_folder(folder, new)
    empty = tmp_path / "sweeps" / "other"
    empty.mkdir()
    studies.claim_folder(empty, new)  # a new folder is the new study's
    assert (empty / studies.STUDY_FILE).read_text() == new.user_attrs["started"] + "\n"
    assert sorted(p.name for p in empty.iterdir()) == [studies.STUDY_FILE]


def test_a_grid_half_stored_by_a_stopped_worker_is_completed_by_the_next(tmp_path, monkeypatch):
    sweep = read_sweep_file(sweep_file(tmp_path, seeds=[1, 2], grid={"model.lr": [1e-3, 2e-3]}))
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    store = studies.add_waiting

    def stopped_after_two(study, params, distributions):
        if len(study.get_trials()) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the grid is stored
        store(study, params, distributions)

    monkeypatch.setattr(studies, "add_waiting", stopped_after_two)
    with pytest.raises(KeyboardInterrupt):
        studies.open_study(storage, "grid", sweep, [])
    monkeypatch.setattr(studies, "add_waiting", store)
    study = optuna.load_study(study_name="grid", storage=storage)
    assert len(study.get_trials()) == 2 and not study.user_attrs.get("ready")
    gone = subprocess.Popen(["true"])  # its pid is free once it has ended
    gone.wait()
    started = study.user_attrs["started"].replace(f":{os.getpid()} (", f":{gone.pid} (")
    study.set_user_attr("started", started)  # as if that worker's process had stopped
    again = studies.open_study(storage, "grid", sweep, [])  # the same command, run again
    params = [(t.params["model.lr"], t.params["seed"]) for t in again.get_trials()]
    assert sorted(params) == [(lr, seed) for lr in (1e-3, 2e-3) for seed in (1, 2)]
    assert again.user_attrs["ready"]
