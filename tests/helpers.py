"""Helpers the tests import: tiny MNIST-format files written by the tests themselves, the flags
of a quick, quiet run on them, the CLI in this process or its own, and readers of what runs
leave (TensorBoard scalars, CSV files)."""

import csv
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data"


def write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's idx format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian int32 dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digit k is a bright 6x6 square at a position of its own over faint noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=count)
    images = rng.integers(0, 40, size=(count, 28, 28))
    for image, label in zip(images, labels):
        row, col = 3 + 9 * (label // 4), 3 + 7 * (label % 4)
        image[row : row + 6, col : col + 6] = 255
    return images, labels


def write_mnist(root: Path, train_count: int = 320, test_count: int = 100) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count, seed in (("train", train_count, 0), ("t10k", test_count, 1)):
        images, labels = fake_digits(count, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def tiny_args(data_dir: Path) -> list[str]:
    """CLI flags for a quick, quiet run on the fake digits."""
    return [
        f"--data.data_dir={data_dir}",
        "--data.val_size=64",
        "--data.verify_checksums=false",
        "--data.download=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=4",
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


DETERMINISTIC = "--trainer.deterministic=true"
NO_TEST = "--test_after_fit=false"
SEVERAL_RUNS = pytest.mark.slow  # training runs one after another: seconds each


def exit_status(args: list[str], callbacks: list | None = None) -> int:
    """Run the CLI in this process as `mnist-lit` does and return its exit status."""
    from mnist_lit.__main__ import main

    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores Ctrl-C once it has had one
    try:
        main(args, callbacks)
    except SystemExit as exit_:
        return exit_.code
    finally:
        signal.signal(signal.SIGINT, handler)
    return 0


def module_command(*args: str) -> list[str]:
    """`python -m mnist_lit ARGS` as a command for a process of its own."""
    return [sys.executable, "-m", "mnist_lit", *args]


def run_module(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """`python -m mnist_lit ARGS` in its own process, this checkout's package first on the path,
    its output captured as text."""
    return subprocess.run(
        module_command(*args), cwd=cwd, env=module_env(), capture_output=True, text=True, **kwargs
    )


def module_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def scalars(run: Path, tag: str) -> list[float]:
    """The values of a TensorBoard scalar tag in a run folder (none if it was never written)."""
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return [event.value for event in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def get_json(url: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def find_chromium() -> str | None:
    """Debian's package installs `chromium`; other systems name it otherwise."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


@contextmanager
def headless_page(url: str):
    """A headless Chromium tab (through Playwright) on `url`, 1300x1000, with every address it
    asked for in `page.requested`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.requested = []
            page.on("request", lambda request: page.requested.append(request.url))
            page.goto(url)
            yield page
        finally:
            browser.close()


@contextmanager
def serving(command: list[str]):
    """A server that `command` starts with `--host 127.0.0.1 --port PORT` (a free port); yields
    its address, and stops it at the end."""
    port = free_port()
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def tensorboard_command(logdir: Path) -> list[str]:
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
