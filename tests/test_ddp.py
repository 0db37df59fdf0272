"""Lightning's DDP on CPU (gloo) with two real processes: evaluation counts every image once."""

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.datasets import MNIST

from mnist_lit.__main__ import main
from tests.helpers import (
    NO_TEST,
    module_command,
    module_env,
    read_csv,
    run_module,
    scalars,
    tiny_args,
    write_mnist,
)

pytestmark = pytest.mark.slow  # real two-process runs

DDP = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]
STEPS = (320 - 64) // (2 * 8)  # an epoch of the tiny data in batches of 8 on each of 2 processes


def run_cli(args: list[str], cwd) -> None:
    """`python -m mnist_lit ...` in a subprocess: DDP launches its second process from it."""
    done = run_module(args, cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """fit + test under 2-process DDP on 101 test images: the default sampler would pad to 102."""
    root = tmp_path_factory.mktemp("ddp")
    data = write_mnist(root / "data", train_count=320, test_count=101)
    run_cli(["fit", *tiny_args(data), *DDP, "--trainer.max_epochs=2", "--seed_everything=5"], root)
    return root, data


def test_ddp_test_matches_single_process_exactly(ddp_run, monkeypatch):
    root, data = ddp_run
    run = root / "lightning_logs" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert scalars(run, "test/images")[-1] == 101
    assert scalars(run, "val/images")[-1] == 64
    assert metrics["train_images"] == 2 * 256  # 2 epochs, both processes together

    monkeypatch.chdir(root)
    single = main(["test", *tiny_args(data), f"--ckpt_path={metrics['best_checkpoint']}"])
    figures = single.trainer.callback_metrics
    assert figures["test/images"].item() == 101
    assert figures["test/acc"].item() == metrics["test/acc"]  # same counts, same figure
    assert figures["test/loss"].item() == pytest.approx(metrics["test/loss"], rel=1e-5)


def test_ddp_test_with_uneven_batches_finishes(ddp_run):
    """101 images in batches of 50: one process runs 2 batches, the other 1, so nothing may
    wait for the other at each batch (a per-batch all-reduce would hang here)."""
    root, data = ddp_run
    checkpoint = root / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt"
    run_cli(
        ["test", *tiny_args(data), *DDP, "--data.batch_size=50", f"--ckpt_path={checkpoint}"], root
    )
    assert scalars(checkpoint.parents[1] / "test", "test/images")[-1] == 101


def test_ddp_validate_matches_single_process(ddp_run, monkeypatch):
    root, data = ddp_run
    checkpoint = root / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt"
    run_cli(["validate", *tiny_args(data), *DDP, f"--ckpt_path={checkpoint}"], root)
    written = checkpoint.parents[1] / "validate"  # into the run it validated
    ddp_images, ddp_acc = scalars(written, "val/images")[-1], scalars(written, "accuracy/val")[-1]
    monkeypatch.chdir(root)
    single = main(["validate", *tiny_args(data), f"--ckpt_path={checkpoint}"])
    figures = single.trainer.callback_metrics
    assert ddp_images == figures["val/images"].item() == 64
    assert ddp_acc == figures["val/acc"].item()


def test_ddp_predict_writes_each_input_once(ddp_run):
    root, data = ddp_run
    checkpoint = root / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt"
    inputs = root / "inputs"
    inputs.mkdir()
    for index, digit in enumerate(MNIST(str(data), train=False).data[:7].numpy()):
        Image.fromarray(digit).save(inputs / f"{index}.png")
    (inputs / "8_broken.png").write_bytes(b"not a png")
    args = ["predict", *tiny_args(data), *DDP, f"--ckpt_path={checkpoint}"]
    run_cli([*args, f"--data.predict_path={inputs}", "--predictions_file=out.csv"], root)
    rows = read_csv(root / "out.csv")
    expected = [str(inputs / f"{i}.png") for i in range(7)] + [str(inputs / "8_broken.png")]
    assert [row["path"] for row in rows] == expected  # 7 images over 2 processes, each once
    assert [bool(row["error"]) for row in rows] == [False] * 7 + [True]


def stop_together(group: subprocess.Popen, last: Path) -> str:
    """SIGTERM to every process of a DDP fit at once, as srun and torchrun deliver a
    preemption, once it is inside its second epoch; its output once all of them have ended."""
    try:
        deadline = time.monotonic() + 120
        while not last.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        os.killpg(group.pid, signal.SIGTERM)
        output, _ = group.communicate(timeout=90)
        deadline = time.monotonic() + 30
        while alive(group.pid) and time.monotonic() < deadline:  # the other rank
            time.sleep(0.1)
        assert not alive(group.pid), "a process of the DDP fit did not stop"
        return output
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group.pid, signal.SIGKILL)  # never leave a stuck rank behind


def alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_every_process_at_one_step_and_the_run_resumes(tmp_path):
    """Lightning's own handling broadcasts from inside the signal handler and stops each process
    on its own flag: processes that get the signal a step apart stop a step apart and wait for
    each other until gloo's timeout (the first try hung, before SigtermStopsTogether)."""
    data = write_mnist(tmp_path / "data")
    args = ["fit", *tiny_args(data), *DDP, "--data.batch_size=8", NO_TEST]
    group = subprocess.Popen(
        module_command(*args, "--trainer.max_epochs=1000"),
        cwd=tmp_path,
        env=module_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the signal reaches both ranks
    )
    last = tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt"
    output = stop_together(group, last)
    assert group.returncode == 128 + signal.SIGTERM, output[-3000:]
    stopped_at = torch.load(last, weights_only=True)["global_step"]
    assert stopped_at >= STEPS  # inside its second epoch
    reported = re.search(r"Interrupted at step (\d+)", output)
    assert reported is None or int(reported.group(1)) == stopped_at, output[-3000:]

    resumed = [*args, f"--trainer.max_epochs={stopped_at // STEPS + 2}", "--ckpt_path=last"]
    run_cli(resumed, tmp_path)
    assert torch.load(last, weights_only=True)["global_step"] == (stopped_at // STEPS + 2) * STEPS
    assert json.loads((last.parents[1] / "metrics.json").read_text())["resumes"] == 1
