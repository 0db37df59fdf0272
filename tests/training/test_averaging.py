"""Weight averaging (configs/best_ema.yaml): what validation, the checkpoint and the test see."""

import json

import pytest
import torch

from mnist_lit.__main__ import main
from tests.helpers import tiny_args

EMA_CONFIG = """
trainer:
  callbacks:
    - class_path: mnist_lit.training.averaging.AveragedWeights
      init_args:
        decay: 0.9
"""


def test_fit_tests_the_averaged_weights_that_validation_chose(tiny_mnist, workdir):
    (workdir / "ema.yaml").write_text(EMA_CONFIG)
    flags = [*tiny_args(tiny_mnist), "--data.batch_size=16"]
    main(["fit", "--config=ema.yaml", *flags, "--trainer.max_epochs=2", "--seed_everything=1"])
    run = workdir / "lightning_logs" / "version_0"
    best = run / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(best, weights_only=True)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged)  # two sets of weights
    after_fit = json.loads((run / "metrics.json").read_text())
    main(["test", *flags, f"--ckpt_path={best}"])  # a run of its own: the checkpoint's weights
    on_its_own = json.loads((run / "test" / "metrics.json").read_text())
    assert after_fit["test/loss"] == pytest.approx(on_its_own["test/loss"], rel=1e-6)
