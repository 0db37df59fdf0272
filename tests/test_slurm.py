"""The sbatch files of configs/slurm/ on a real one-node SLURM cluster that these tests start
(scripts/slurm_cluster.py): DDP under srun, a job stopped by SIGTERM and requeued."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_lit.__main__ import main
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


def submit(slurm: dict, folder: Path, sbatch: str, *args: str) -> str:
    """Submit configs/slurm/SBATCH from the project's folder (where its jobs find fit.sh), to
    run in `folder`; the job's id."""
    command = ["sbatch", "--parsable", f"--chdir={folder}", f"configs/slurm/{sbatch}", *args]
    done = subprocess.run(command, cwd=REPO, env=slurm, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def job_fields(slurm: dict, job: str) -> dict[str, str]:
    shown = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", job], env=slurm, capture_output=True, text=True
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", shown))


def wait_for(slurm: dict, job: str, state: str | None = None, timeout: float = 300) -> dict:
    """The job's fields once it has ended (or reached `state`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = job_fields(slurm, job)
        ended = fields.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
        if fields.get("JobState") == state or (state is None and ended):
            return fields
        time.sleep(0.3)
    raise AssertionError(f"job {job} still {fields.get('JobState')} after {timeout} s")


def run_folders(folder: Path) -> list[Path]:
    return sorted(path.parent for path in folder.rglob("config.yaml"))


@pytest.mark.skipif(not (REAL_DATA / "MNIST" / "raw").is_dir(), reason=f"no MNIST at {REAL_DATA}")
def test_ddp_under_srun_tests_every_image_once_as_one_process_would(slurm, tmp_path, monkeypatch):
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=8"]
    job = submit(slurm, tmp_path, "fit_cpu.sbatch", f"--data.data_dir={REAL_DATA}", *short)
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


def test_a_requeued_fit_continues_its_run(slurm, tmp_path):
    data = write_mnist(tmp_path / "data")
    args = [*tiny_args(data), "--data.batch_size=8", "--trainer.max_epochs=12"]
    job = submit(slurm, tmp_path, "fit_cpu.sbatch", *args, "--test_after_fit=false")
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
    fields = wait_for(slurm, job, "PENDING")  # stopped, saved and queued again by fit.sh
    subprocess.run(
        ["scontrol", "update", f"JobId={job}", "StartTime=now"], env=slurm
    )  # not in 2 min
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
    job = submit(slurm, tmp_path, "fit_cpu.sbatch", *tiny_args(data), "--trainer.devices=3")
    fields = wait_for(slurm, job)
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert fields["JobState"] == "FAILED" and fields["ExitCode"] == "2:0"
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "Traceback" not in output  # one line from each process
    assert "--ntasks-per-node=2` does not match" in errors[0]
    assert not (tmp_path / "lightning_logs").exists()  # nothing half-written


def test_the_gpu_file_is_the_cpu_file_with_gpus():
    cpu, gpu = (
        (REPO / "configs/slurm" / name).read_text() for name in ("fit_cpu.sbatch", "fit_gpu.sbatch")
    )
    changed = {
        line for line in set(cpu.splitlines()) ^ set(gpu.splitlines()) if not line.startswith("# ")
    }
    assert {line.split("=")[0].strip() for line in changed} == {
        "#SBATCH --ntasks-per-node",
        "#SBATCH --gpus-per-node",
        "#SBATCH --cpus-per-task",
        "ACCELERATOR",
    }
