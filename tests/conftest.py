"""Fixtures shared by the tests: an empty working folder, tiny MNIST files, one short run."""

import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.cli import main
from tests.helpers import tiny_args, write_mnist


@pytest.fixture(scope="session", autouse=True)
def plain_argv():
    """The CLI is driven through main(args=...): pytest's own arguments must not reach it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["mnist-lit"])
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
