"""Sweeps as users run them, in real processes on tiny data: every trial an ordinary `fit`,
the summary equal to the runs' own metrics.json, resumed after a kill without running a
finished trial twice, and shared by two workers on SQLite or on a PostgreSQL server."""

import json
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from mnist_lit.__main__ import main
from mnist_lit.sweeps.storage import open_storage
from tests.helpers import REPO, module_command, module_env, run_module, scalars, tiny_args

pytestmark = pytest.mark.slow  # each trial is a `python -m mnist_lit fit` process
FAST = str(REPO / "configs" / "fast.yaml")


def quick_flags(data: Path, epochs: int = 1) -> list[str]:
    return [*tiny_args(data), f"--trainer.max_epochs={epochs}", "--trainer.limit_train_batches=3"]


def write_grid(folder: Path, seeds: list[int], lrs: list[float], name: str = "grid") -> Path:
    path = folder / f"{name}.yaml"
    content = {"configs": [FAST], "seeds": seeds, "grid": {"model.lr": lrs}}
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def sweep(*args: str, cwd: Path) -> subprocess.Popen:
    command = module_command("sweep", *args)
    return subprocess.Popen(command, cwd=cwd, env=module_env(), stdout=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return output


def fits_started(log: Path) -> list[str]:
    """The fit commands a trial's log records, one per attempt."""
    return [line for line in log.read_text().splitlines() if line.startswith("$ ")]


def test_grid_runs_each_trial_as_a_fit_and_summarises_their_metrics(grid_sweep, monkeypatch):
    workdir, grid, folder, output = (
        grid_sweep.root,
        grid_sweep.file,
        grid_sweep.folder,
        grid_sweep.output,
    )
    rows = {row["setting"]: row for row in read_csv(folder / "summary.csv")}
    assert set(rows) == {"fast,lr=1e-05", "fast,lr=3e-05"} and "← chosen" in output
    assert not (workdir / "lightning_logs").exists()  # the user's own runs stay apart
    for setting, row in rows.items():
        runs = sorted(folder.glob(f"{setting}/seed_*/version_0"))
        assert len(runs) == 2  # one run folder per seed, as a hand-started fit leaves
        metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
        val = [m["val/acc_best"] for m in metrics]
        test = [m["test/acc"] for m in metrics]
        assert float(row["val/acc_best_mean"]) == pytest.approx(statistics.fmean(val))
        assert float(row["val/acc_best_std"]) == pytest.approx(statistics.stdev(val))
        assert float(row["test/acc_mean"]) == pytest.approx(statistics.fmean(test))
        config = yaml.safe_load((runs[0] / "config.yaml").read_text())
        assert config["model"]["lr"] == float(setting.split("=")[1])
        assert config["data"]["batch_size"] == 16  # the sweep's flags reach every trial
        assert (runs[0] / "checkpoints" / "best.ckpt").is_file()
    best = max(rows.values(), key=lambda row: float(row["val/acc_best_mean"]))
    assert best["chosen"] == "True"
    # each setting's band in TensorBoard: its seeds' own validation accuracy, by epoch
    for setting in rows:
        seed_runs = folder.glob(f"{setting}/seed_*/version_0")
        seeds = [at_epoch_ends(run, "accuracy/val") for run in seed_runs]
        for statistic in (statistics.fmean, min, max):
            expected = [statistic(values) for values in zip(*seeds)]
            tag = f"seeds/val_acc_{statistic.__name__.replace('fmean', 'mean')}"
            assert scalars(folder / setting / "mean", tag) == pytest.approx(expected)
    # Optuna's own tools read the same: each trial's validation curve, the files, the summary
    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{folder / 'optuna.db'}")
    for trial in study.trials:
        run = folder.glob(f"*/seed_{trial.params['seed']}/version_0")
        run = next(r for r in run if f"lr={trial.params['model.lr']:.4g}" in str(r))
        assert list(trial.intermediate_values.values()) == at_epoch_ends(run, "accuracy/val")
    assert study.user_attrs["sweep_file"] == grid.read_text()
    assert study.user_attrs["summary"] == (folder / "summary.md").read_text()
    # TensorBoard's HParams tab: the sweep's experiment names the varied keys as its columns,
    # and the trials add their values without experiments of their own to compete with it
    assert hparams_columns(folder) == ["model/lr", "seed"]  # swept, then the seeds
    assert hparams_columns(runs[0]) is None
    # the table again without training, and the sweep's picture
    again = run_module(["sweep", "--summary", str(folder)], cwd=workdir)
    assert again.returncode == 0 and (folder / "summary.md").read_text() in again.stdout
    main(["report", str(folder)])
    assert (folder / "report.png").stat().st_size > 10_000


def hparams_columns(folder: Path) -> list[str] | None:
    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent("hparams").get(metadata.EXPERIMENT_TAG)
    if content is None:
        return None
    return [info.name for info in metadata.parse_experiment_plugin_data(content).hparam_infos]


def read_csv(path: Path) -> list[dict]:
    import csv

    with open(path) as file:
        return list(csv.DictReader(file))


def wait_for(condition, what: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# SIGINT (Ctrl-C) reaches the fit as SIGTERM does: test_trial.py; here the ways a sweep ends
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stopped_sweep_carries_on_without_running_a_finished_trial_twice(
    stop, workdir, tiny_mnist
):
    grid = write_grid(workdir, seeds=[1, 2], lrs=[1e-3])
    flags = [str(grid), *quick_flags(tiny_mnist, epochs=6), "--data.batch_size=32"]
    folder = workdir / "sweeps" / "grid" / "fast,lr=0.001"
    first = sweep(*flags, cwd=workdir)
    second_run = folder / "seed_2" / "version_0"
    # stop it inside the second trial, once that trial has a checkpoint to resume from
    wait_for(lambda: (second_run / "checkpoints" / "last.ckpt").is_file(), "the second trial")
    first.send_signal(stop)
    first.communicate(timeout=120)
    assert first.returncode == (128 + stop if stop != signal.SIGKILL else -signal.SIGKILL)
    # the fit got SIGTERM (from the sweep, or from the kernel when the sweep was killed) and
    # stops as a preempted run; let it finish stopping before starting again
    log = folder / "seed_2" / "fit.log"
    wait_for(lambda: "Stopped by SIGTERM" in log.read_text(), "the fit to stop", 120)
    output = finish(sweep(*flags, cwd=workdir))
    assert len(fits_started(folder / "seed_1" / "fit.log")) == 1  # finished: not rerun
    attempts = fits_started(log)
    assert len(attempts) == 2 and "--ckpt_path last" in attempts[1]  # resumed, not restarted
    metrics = json.loads((second_run / "metrics.json").read_text())
    assert metrics["epochs"] == 6  # one run, its epochs counted across the stop
    assert "| `fast,lr=0.001` ← chosen | 2 |" in output  # each seed counted once


def test_two_workers_share_a_grid_on_sqlite(workdir, tiny_mnist):
    check_two_workers(workdir, tiny_mnist, [])


def test_two_workers_share_a_grid_on_a_postgresql_server(workdir, tiny_mnist, postgres_url):
    check_two_workers(workdir, tiny_mnist, ["--storage", postgres_url])


def check_two_workers(workdir: Path, data: Path, storage: list[str]) -> None:
    grid = write_grid(workdir, seeds=[1, 2], lrs=[1e-3])
    workers = [sweep(str(grid), *storage, *quick_flags(data), cwd=workdir) for _ in range(2)]
    for worker in workers:
        finish(worker)
    folder = workdir / "sweeps" / "grid"
    logs = sorted(folder.glob("*/seed_*/fit.log"))
    assert len(logs) == 2 and all(len(fits_started(log)) == 1 for log in logs)
    url = storage[1] if storage else f"sqlite:///{folder / 'optuna.db'}"
    trials = optuna.load_study(study_name="grid", storage=open_storage(url)).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2


def test_search_records_its_trials_and_picks_by_validation(workdir, tiny_mnist):
    path = workdir / "search.yaml"
    space = {
        "model.lr": {"low": 1e-5, "high": 1e-3, "log": True},
        "data.batch_size": {"choices": [16, 32]},
    }
    path.write_text(
        yaml.safe_dump({"configs": [FAST], "seeds": [1], "search": {"trials": 2, "space": space}})
    )
    output = finish(sweep(str(path), *quick_flags(tiny_mnist), cwd=workdir))
    folder = workdir / "sweeps" / "search"
    trials = optuna.load_study(
        study_name="search", storage=f"sqlite:///{folder / 'optuna.db'}"
    ).get_trials()
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials)
    for trial in trials:
        metrics = json.loads(
            (folder / f"trial_{trial.number}" / "seed_1" / "version_0" / "metrics.json").read_text()
        )
        assert trial.value == metrics["val/acc_best"]
        assert 1e-5 <= trial.params["model.lr"] <= 1e-3
    best = max(trials, key=lambda t: t.value)
    chosen = next(row for row in read_csv(folder / "summary.csv") if row["chosen"] == "True")
    assert float(chosen["val/acc_best_mean"]) == pytest.approx(best.value)
    assert "search" in output


def test_a_failing_trial_is_recorded_with_its_reason_and_the_sweep_goes_on(
    workdir, tiny_mnist, capsys
):
    path = workdir / "bad.yaml"
    grid = {"model.dropout": [0.0, 1.5]}  # 1.5 parses as a float; the model refuses it
    path.write_text(yaml.safe_dump({"configs": [FAST], "seeds": [1], "grid": grid}))
    process = sweep(str(path), *quick_flags(tiny_mnist), cwd=workdir)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 1  # after finishing the others and printing the summary
    assert "| `fast,dropout=0` | 1 |" in output and "No setting chosen" in output
    assert (
        "Failed: fast,dropout=1.5 seed 1: seed 1: exit status 2: error: --model.dropout 1.5"
        in output
    )
    main(["sweep", "--summary", str(workdir / "sweeps" / "bad"), "--choose_anyway", "true"])
    assert "| `fast,dropout=0` ← chosen | 1 |" in capsys.readouterr().out


def test_a_fit_killed_from_outside_is_retried_from_its_last_checkpoint(workdir, tiny_mnist):
    grid = write_grid(workdir, seeds=[1], lrs=[1e-3])
    process = sweep(str(grid), *quick_flags(tiny_mnist, epochs=6), cwd=workdir)
    seed_runs = workdir / "sweeps" / "grid" / "fast,lr=0.001" / "seed_1"
    last = seed_runs / "version_0" / "checkpoints" / "last.ckpt"
    wait_for(last.is_file, "the fit's first checkpoint")
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGKILL)  # as the out-of-memory killer would
    output = finish(process)
    assert "seed 1: killed by SIGKILL (out of memory?)" in output and "retrying" in output
    attempts = fits_started(seed_runs / "fit.log")
    assert len(attempts) == 2 and "--ckpt_path last" in attempts[1]
    metrics = json.loads((seed_runs / "version_0" / "metrics.json").read_text())
    assert metrics["epochs"] == 6  # one run, carried on
    checkpoints = sorted(p.name for p in last.parent.iterdir())
    assert checkpoints == ["best.ckpt", "last.ckpt"]  # no best-v1.ckpt after the resume
    assert "| `fast,lr=0.001` ← chosen | 1 |" in output


def test_a_new_study_never_continues_the_runs_of_a_deleted_one(workdir, tiny_mnist):
    grid = write_grid(workdir, seeds=[1], lrs=[1e-3])
    folder = workdir / "sweeps" / "grid"
    old_run = folder / "fast,lr=0.001" / "seed_1" / "version_0"  # a trial of a study now gone
    old_run.mkdir(parents=True)
    (folder / "study.txt").write_text("2026-01-01 00:00:00 by elsewhere:1 (0123abcd)\n")
    again = run_module(["sweep", str(grid), *quick_flags(tiny_mnist, epochs=2)], cwd=workdir)
    assert again.returncode == 2, again.stderr
    assert again.stderr.startswith("error: ") and "runs of the sweep study started" in again.stderr
    assert len(again.stderr.splitlines()) == 1
    assert list(old_run.iterdir()) == []  # untouched: nothing trained


def at_epoch_ends(run: Path, tag: str) -> list[float]:
    """A run's `tag` after each epoch's training (fast.yaml validates 4 times an epoch), found by
    the steps at which the epoch's training loss is logged."""
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    ends = {event.step for event in events.Scalars("loss/train")}
    return [event.value for event in events.Scalars(tag) if event.step in ends]
