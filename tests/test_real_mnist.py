"""End to end on the real MNIST files (read in place from ../shared/data): minutes, not seconds."""

import json
import sys

import pytest

from mnist_lit.cli import main
from tests.conftest import REAL_DATA, REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (REAL_DATA / "MNIST" / "raw").is_dir(), reason=f"no MNIST at {REAL_DATA}"
    ),
]


def test_one_epoch_then_test_reaches_97_percent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["mnist-lit"])
    base = str(REPO / "configs" / "base.yaml")
    data = f"--data.data_dir={REAL_DATA}"
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    main(
        ["fit", "--config", base, data, "--trainer.max_epochs=1", "--test_after_fit=false", *quiet]
    )
    fitted = json.loads((tmp_path / "lightning_logs/version_0/metrics.json").read_text())
    assert fitted["train_images"] == 55_000  # the official 60,000 less the 5,000 held out
    assert fitted["best_val/acc"] >= 0.97

    tested = main(["test", data, f"--ckpt_path={fitted['best_checkpoint']}", *quiet])
    assert tested.trainer.callback_metrics["test/acc"] >= 0.97
    # all 10,000 official test images were evaluated
    assert tested.trainer.num_test_batches == [313]  # ceil(10,000 / 32)
    print(f"test/acc {tested.trainer.callback_metrics['test/acc']:.4f}")
