"""End to end on the real MNIST files (read in place from ../shared/data): minutes, not seconds."""

import csv
import json

import pytest
from PIL import Image
from torchvision.datasets import MNIST

from mnist_lit.__main__ import main
from tests.helpers import REAL_DATA

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (REAL_DATA / "MNIST" / "raw").is_dir(), reason=f"no MNIST at {REAL_DATA}"
    ),
]
DATA = f"--data.data_dir={REAL_DATA}"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
SAVED_DIGITS = 500


@pytest.fixture(scope="module")
def fitted(real_run):
    root, run = real_run
    return root, json.loads((run / "metrics.json").read_text())


def test_one_epoch_then_test_reaches_97_percent(fitted):
    _, metrics = fitted
    assert metrics["train_images"] == 55_000  # the official 60,000 less the 5,000 held out
    assert metrics["val/acc_best"] >= 0.97
    tested = main(["test", DATA, f"--ckpt_path={metrics['best_checkpoint']}", *QUIET])
    figures = tested.trainer.callback_metrics
    assert figures["test/acc"] >= 0.97
    assert figures["test/images"] == 10_000  # every official test image, once
    print(f"test/acc {figures['test/acc']:.4f}")


def labels(path) -> list[str]:
    with open(path, newline="") as file:
        return [row["label"] for row in csv.DictReader(file)]


def test_saved_digits_predict_like_the_test_set(fitted):
    root, metrics = fitted
    checkpoint = f"--ckpt_path={metrics['best_checkpoint']}"
    plain, altered = root / "plain", root / "altered"
    plain.mkdir(), altered.mkdir()
    for index, digit in enumerate(MNIST(str(REAL_DATA), train=False).data[:SAVED_DIGITS].numpy()):
        image = Image.fromarray(digit)
        image.save(plain / f"{index:05d}.png")
        # a scan-like copy: 3x larger, dark ink on white paper, JPEG-compressed
        inverted = Image.fromarray(255 - digit).resize((84, 84), Image.BILINEAR)
        inverted.save(altered / f"{index:05d}.jpg", quality=85)
    for name in ("test_set", "plain", "altered"):
        source = [] if name == "test_set" else [f"--data.predict_path={root / name}"]
        main(
            ["predict", DATA, checkpoint, *source, f"--predictions_file={root / name}.csv", *QUIET]
        )
    reference = labels(root / "test_set.csv")[:SAVED_DIGITS]
    agree = {}
    for name in ("plain", "altered"):
        found = labels(root / f"{name}.csv")
        agree[name] = sum(a == b for a, b in zip(found, reference)) / SAVED_DIGITS
    print(f"agreement with the test run on {SAVED_DIGITS} digits: {agree}")
    assert agree["plain"] == 1.0  # 28x28 PNGs are MNIST's own pixels
    assert agree["altered"] >= 0.97  # resampled, inverted and compressed: a small margin
