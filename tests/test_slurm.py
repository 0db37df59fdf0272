"""The sbatch files of configs/slurm/ on a real one-node SLURM cluster that these tests start
(scripts/slurm_cluster.py): DDP under srun, a job stopped by SIGTERM and requeued."""

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from mnist_lit.__main__ import main
from mnist_lit.sweeps.storage import open_storage
from tests.helpers import REAL_DATA, REPO, scalars, tiny_args, write_mnist

pytestmark = pytest.mark.slow  # a cluster and real multi-process jobs


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The cluster's environment for sbatch, srun and scontrol; skipped where it cannot start
    (not root, slurm-wlm or munge not installed), with the script's one-line reason."""
    folder = tmp_path_factory.mktemp("cluster")
    script = [sys.executable, str(REPO / "scripts" / "slurm_cluster.py")]
    started = subprocess.run([*script, "start", folder], capture_output=True, text=True)
    try:
        if started.returncode != 0:
            pytest.skip(f"no SLURM cluster here: {started.stderr.strip()}")
        jobs = {
            "SLURM_CONF": str(folder / "slurm.conf"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(REPO),
        }
        yield {**os.environ, **jobs}
    finally:
        subprocess.run([*script, "stop", folder])


# the sbatch files ask for GPUs; the test cluster is one node with 2 CPUs
ON_CPUS = {
    "fit.sbatch": ["--gpus-per-node=0", "--ntasks-per-node=2", "--cpus-per-task=1"],
    "sweep_array.sbatch": ["--gpus-per-task=0"],
}


@pytest.fixture(autouse=True)
def no_job_left(request):
    """A test that fails mid-job cancels its jobs, which would hold the node for the next."""
    yield
    if "slurm" in request.fixturenames:
        env = request.getfixturevalue("slurm")
        subprocess.run(["scancel", "--full", f"--user={os.getuid()}"], env=env)
        deadline = time.monotonic() + 60
        while (
            time.monotonic() < deadline
            and subprocess.run(
                ["squeue", "--noheader"], env=env, capture_output=True, text=True
            ).stdout.strip()
        ):
            time.sleep(0.5)


def submit(slurm: dict, folder: Path, sbatch: str, *args: str, options=()) -> str:
    """Submit configs/slurm/SBATCH on CPUs, to run in `folder`; the job's id."""
    options = ["--parsable", f"--chdir={folder}", *ON_CPUS[sbatch], *options]
    command = ["sbatch", *options, str(REPO / "configs" / "slurm" / sbatch), *args]
    done = subprocess.run(command, cwd=folder, env=slurm, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def job_fields(slurm: dict, job: str) -> dict[str, str]:
    """The job's fields as `scontrol show job` gives them (an array's: its first task's)."""
    return array_fields(slurm, job)[0]


def array_fields(slurm: dict, job: str) -> list[dict[str, str]]:
    shown = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", job], env=slurm, capture_output=True, text=True
    ).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in shown.splitlines()] or [{}]


ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


def wait_for(slurm: dict, job: str, state: str | None = None, timeout: float = 300) -> dict:
    """The job's fields once it has ended (or reached `state`)."""
    return wait_for_all(slurm, job, state, timeout)[0]


def wait_for_all(slurm: dict, job: str, state=None, timeout: float = 300) -> list[dict]:
    """The fields of each of the job's tasks once all have ended (or reached `state`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = array_fields(slurm, job)
        states = {task.get("JobState") for task in tasks}
        if states == {state} or (state is None and states <= set(ENDED)):
            return tasks
        time.sleep(0.3)
    raise AssertionError(f"job {job} still {states} after {timeout} s")


def release(slurm: dict, job: str) -> None:
    """Start a requeued job now rather than in 2 minutes (SLURM's wait after a requeue); not in
    the same second, whose launch credentials SLURM has revoked."""
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+2"], env=slurm)


def run_folders(folder: Path) -> list[Path]:
    return sorted(path.parent for path in folder.rglob("config.yaml"))


@pytest.mark.skipif(not (REAL_DATA / "MNIST" / "raw").is_dir(), reason=f"no MNIST at {REAL_DATA}")
def test_ddp_under_srun_tests_every_image_once_as_one_process_would(slurm, tmp_path, monkeypatch):
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=8"]
    job = submit(slurm, tmp_path, "fit.sbatch", f"--data.data_dir={REAL_DATA}", *short)
    fields = wait_for(slurm, job)
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert fields["JobState"] == "COMPLETED", output[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    [run] = run_folders(tmp_path)  # one run, one config.yaml, however many processes
    assert run == tmp_path / f"lightning_logs/slurm-{job}/version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_images"] == 8 * 32 * 2  # 8 batches of 32 in each of the 2 processes
    assert scalars(run, "test/images")[-1] == 10_000  # under DDP: each process tested 5,000

    monkeypatch.chdir(tmp_path)
    single = main(
        [
            "test",
            f"--data.data_dir={REAL_DATA}",
            "--ckpt_path",
            str(run / "checkpoints" / "best.ckpt"),
        ]
    )
    figures = single.trainer.callback_metrics
    assert figures["test/images"].item() == 10_000
    assert figures["test/acc"].item() == metrics["test/acc"]  # the same 10,000 images, once each


def test_a_requeued_ddp_fit_continues_its_run(slurm, tmp_path):
    data = write_mnist(tmp_path / "data")
    args = [*tiny_args(data), "--data.batch_size=8", "--trainer.max_epochs=12"]
    job = submit(slurm, tmp_path, "fit.sbatch", *args, "--test_after_fit=false")
    wait_for(slurm, job, "RUNNING")
    last = tmp_path / f"lightning_logs/slurm-{job}/version_0/checkpoints/last.ckpt"
    while not last.exists():  # its first epoch is done
        assert job_fields(slurm, job)["JobState"] == "RUNNING", (
            tmp_path / f"slurm-{job}.out"
        ).read_text()
        time.sleep(0.2)
    time.sleep(1.0)  # now inside a later epoch
    # what a preemption or the time limit's --signal does: SIGTERM to the job's processes
    subprocess.run(["scancel", "--signal=TERM", job], env=slurm, check=True)
    fields = wait_for(slurm, job, "PENDING")  # stopped, saved and queued again by fit.sbatch
    release(slurm, job)
    fields = wait_for(slurm, job)
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert fields["JobState"] == "COMPLETED" and fields["Restarts"] == "1", output[-3000:]
    assert "Stopped by SIGTERM" in output and "from its last.ckpt (restart 1)" in output
    [run] = run_folders(tmp_path)  # the requeued job went on in the same run folder
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 12 and metrics["resumes"] == 1
    assert metrics["train_images"] == 12 * 256  # nothing trained twice, nothing skipped


def test_tasks_that_do_not_match_the_devices_are_one_line(slurm, tmp_path):
    data = write_mnist(tmp_path / "data")
    job = submit(slurm, tmp_path, "fit.sbatch", *tiny_args(data), "--trainer.devices=3")
    fields = wait_for(slurm, job)
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert fields["JobState"] == "FAILED" and fields["ExitCode"] == "2:0"
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "Traceback" not in output  # one line from each process
    assert "--ntasks-per-node=2` does not match" in errors[0]
    assert not (tmp_path / "lightning_logs").exists()  # nothing half-written


def test_sweep_workers_as_a_job_array_run_each_trial_once(slurm, tmp_path, grid_sweep):
    journal = tmp_path / "grid.journal"  # Optuna's journal file: no database server
    sweep = [str(grid_sweep.file), "--storage", str(journal), *grid_sweep.flags]
    job = submit(slurm, tmp_path, "sweep_array.sbatch", *sweep)
    tasks = wait_for_all(slurm, job, timeout=600)
    outputs = [(tmp_path / f"slurm-{job}_{task}.out").read_text() for task in range(3)]
    assert [t["JobState"] for t in tasks] == ["COMPLETED"] * 3, "\n".join(outputs)[-3000:]
    folder = tmp_path / "sweeps" / "grid"
    logs = sorted(folder.glob("*/seed_*/fit.log"))
    assert len(logs) == 4  # 2 rates x 2 seeds, each fitted once by whichever worker took it
    assert all(fits_started(log) == 1 for log in logs)
    study = optuna.load_study(study_name="grid", storage=open_storage(str(journal)))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert len({t.user_attrs["worker"] for t in study.trials}) >= 2  # shared out
    # the same figures as one worker's sweep of the same grid: every fit is deterministic
    assert figures(folder / "summary.csv") == figures(grid_sweep.folder / "summary.csv")


def test_a_requeued_sweep_worker_hands_its_trial_back_and_it_resumes(slurm, tmp_path, grid_sweep):
    grid = tmp_path / "one.yaml"  # one trial, long enough to be stopped inside
    fast = str(REPO / "configs" / "fast.yaml")
    grid.write_text(yaml.safe_dump({"configs": [fast], "seeds": [1], "grid": {"model.lr": [1e-5]}}))
    journal = tmp_path / "one.journal"
    sweep = [str(grid), "--storage", str(journal), *grid_sweep.flags, "--trainer.max_epochs=20"]
    job = submit(slurm, tmp_path, "sweep_array.sbatch", *sweep, options=["--array=0"])
    worker = f"{job}_0"
    runs = tmp_path / "sweeps" / "one" / "fast,lr=1e-05" / "seed_1"
    last = runs / "version_0" / "checkpoints" / "last.ckpt"
    while not last.exists():
        output = tmp_path / f"slurm-{job}_0.out"
        assert job_fields(slurm, worker)["JobState"] in ("PENDING", "RUNNING"), output.read_text()
        time.sleep(0.2)
    time.sleep(1.0)  # inside a later epoch
    subprocess.run(["scancel", "--signal=TERM", worker], env=slurm, check=True)
    wait_for(slurm, worker, "PENDING")  # handed back its trial, exited 143, queued again
    release(slurm, worker)
    fields = wait_for(slurm, worker)
    output = (tmp_path / f"slurm-{job}_0.out").read_text()
    assert fields["JobState"] == "COMPLETED" and fields["Restarts"] == "1", output[-3000:]
    study = optuna.load_study(study_name="one", storage=open_storage(str(journal)))
    first, retry = study.trials
    assert (first.state, first.user_attrs["stopped"]) == (TrialState.FAIL, "sweep stopped")
    assert retry.state == TrialState.COMPLETE and retry.params == first.params
    attempts = [line for line in (runs / "fit.log").read_text().splitlines() if line[:2] == "$ "]
    assert len(attempts) == 2 and attempts[1].endswith("--ckpt_path last")
    [run] = runs.glob("version_*")  # the retry went on in the trial's own run folder
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["resumes"]) == (20, 1)
    assert metrics["train_images"] == 20 * 3 * 16  # nothing trained twice, nothing skipped


def fits_started(log: Path) -> int:
    return sum(line.startswith("$ ") for line in log.read_text().splitlines())


def figures(summary: Path) -> list[dict]:
    """Each setting's accuracies in a sweep's summary.csv (seconds differ run to run)."""
    with open(summary) as file:
        rows = list(csv.DictReader(file))
    keep = ("setting", "seeds", "val/", "test/", "paired_", "chosen")
    return [{k: v for k, v in row.items() if k.startswith(keep)} for row in rows]
