"""Lightning's DDP on CPU (gloo) with two real processes: evaluation counts every image once."""

import json

import pytest
from PIL import Image
from torchvision.datasets import MNIST

from mnist_lit.__main__ import main
from tests.helpers import (
    read_csv,
    run_module,
    scalars,
    tiny_args,
    write_mnist,
)

pytestmark = pytest.mark.slow  # real two-process runs

DDP = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]


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
