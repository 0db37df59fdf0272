"""Fixtures shared by the tests: an empty working folder, tiny MNIST files, one short run (and
copies of it to evaluate), one epoch on the real MNIST, a throwaway PostgreSQL server."""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.__main__ import main
from tests.helpers import REAL_DATA, REPO, free_port, run_module, tiny_args, write_mnist

# pytest-xdist's workers share the cores: each takes its part, and so do the processes it starts
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 0)):
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first: pytest-xdist hands the files out in this order (pyproject's
    --no-loadscope-reorder), so the long ones start at once and the quick ones fill in the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def plain_argv(tmp_path_factory):
    """The CLI is driven through main(args=...): pytest's own arguments must not reach it, nor
    the defaults file of whoever runs the tests (~/.config/mnist-lit/defaults.yaml)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["mnist-lit"])
        patch.setenv("MNIST_LIT_DEFAULTS", str(tmp_path_factory.getbasetemp() / "no-defaults"))
        yield


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    """Run the CLI in an empty folder, as a user would."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    """A data_dir with 320 training and 100 test images in torchvision's MNIST layout."""
    return write_mnist(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One short fit (+ test of the best checkpoint) on the fake digits, with the graph logged."""
    root = tmp_path_factory.mktemp("tracking")
    data = write_mnist(root / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        args = ["fit", *tiny_args(data), "--trainer.max_epochs=3", "--data.batch_size=16"]
        main(args + ["--trainer.logger.log_graph=true", "--seed_everything=3"])
    folder = root / "lightning_logs" / "version_0"
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return folder, events


@pytest.fixture
def tiny_run_copy(tiny_run, workdir) -> Path:
    """A copy of tiny_run's folder as lightning_logs/version_0 of the working folder: commands
    that evaluate its checkpoint write into its run, which the shared tiny_run must not get."""
    run = workdir / "lightning_logs" / "version_0"
    shutil.copytree(tiny_run[0], run)
    return run


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB file system (tmpfs), for what a full disk does; needs root to mount."""
    folder = tmp_path / "small_disk"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (and a system that allows it)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def find_postgres(program: str) -> str | None:
    found = shutil.which(program) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server: its own cluster in a temporary folder, on a free local
    port, stopped and deleted afterwards (`.ci/run` installs Debian's postgresql)."""
    initdb, pg_ctl = find_postgres("initdb"), find_postgres("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL is not installed here (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="mnist-lit-postgres-"))
    as_owner = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(folder, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    subprocess.run([*as_owner, initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)  # fmt: skip
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = [*as_owner, pg_ctl, "-D", data, "-l", folder / "server.log", "-o", options, "-w"]
    subprocess.run([*start, "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"  # the docs' form
    finally:
        stop = [*as_owner, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"]
        subprocess.run(stop, check=True, capture_output=True)
        shutil.rmtree(folder)


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> tuple[Path, Path]:
    """The quick start's first fit on the real MNIST (fast.yaml: one epoch), without the test
    after fit: its folder and its run. Skipped where ../shared/data holds no MNIST."""
    if not (REAL_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"no MNIST at {REAL_DATA}")
    root = tmp_path_factory.mktemp("real")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        fast = str(REPO / "configs" / "fast.yaml")
        quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
        main(
            [
                "fit",
                "--config",
                fast,
                f"--data.data_dir={REAL_DATA}",
                "--test_after_fit=false",
                *quiet,
            ]
        )
    return root, root / "lightning_logs" / "version_0"


@pytest.fixture(scope="session")
def grid_sweep(tmp_path_factory) -> SimpleNamespace:
    """One worker's sweep of a 2 x 2 grid (two learning rates, low enough for their accuracies
    to differ, and two seeds) on the fake digits, one short epoch per fit: its working folder,
    sweep file, flags, sweep folder and printed output."""
    root = tmp_path_factory.mktemp("grid")
    data = write_mnist(root / "data")
    grid = root / "grid.yaml"
    content = {"configs": [str(REPO / "configs" / "fast.yaml")], "seeds": [1, 2]}
    grid.write_text(yaml.safe_dump({**content, "grid": {"model.lr": [1e-5, 3e-5]}}))
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3"]
    flags = ["--data.batch_size=16", *tiny_args(data), *short]
    done = run_module(["sweep", str(grid), *flags], cwd=root, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = root / "sweeps" / "grid"
    return SimpleNamespace(root=root, file=grid, flags=flags, folder=folder, output=done.stdout)
