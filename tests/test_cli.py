import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mnist_lit.cli import main
from tests.conftest import REPO, tiny_args

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run the CLI in an empty folder, as a user would, with no stray pytest arguments."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["mnist-lit"])
    return tmp_path


def run_dir(root: Path, version: int) -> Path:
    return root / "lightning_logs" / f"version_{version}"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_parses_and_round_trips(config, workdir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    (workdir / "printed.yaml").write_text(printed)
    with pytest.raises(SystemExit):
        main(["fit", "--config", "printed.yaml", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out) == yaml.safe_load(printed)


def test_help_documents_arguments_from_docstrings(workdir, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Adam learning rate" in help_text
    assert "Training images held out for validation" in help_text
    assert "--test_after_fit" in help_text


def test_fit_tests_best_checkpoint_and_writes_metrics(tiny_mnist, workdir):
    args = ["fit", *tiny_args(tiny_mnist), "--trainer.max_epochs=4", "--seed_everything=1"]
    main(args + ["--data.batch_size=16", "--model.lr=2e-3"])
    run = run_dir(workdir, 0)
    metrics = json.loads((run / "metrics.json").read_text())
    assert Path(metrics["best_checkpoint"]) == run / "checkpoints" / "best.ckpt"
    assert metrics["test_checkpoint"] == metrics["best_checkpoint"]
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4 * 256 // 16  # the end of training, even without a new best
    assert metrics["train_images"] == 4 * 256
    assert metrics["train_seconds"] > 0 and metrics["train_images_per_second"] > 0
    assert metrics["epochs"] == 4
    # the fake digits are easy: well above chance (0.1) after 4 short epochs
    assert metrics["best_val/acc"] > 0.5 and metrics["test/acc"] > 0.5
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["batch_size"] == 16 and config["model"]["lr"] == 2e-3


def test_test_after_fit_can_be_switched_off(tiny_mnist, workdir):
    main(["fit", *tiny_args(tiny_mnist), "--trainer.max_epochs=1", "--test_after_fit=false"])
    metrics = json.loads((run_dir(workdir, 0) / "metrics.json").read_text())
    assert "best_val/acc" in metrics and "test/acc" not in metrics


def test_validate_test_predict_from_a_checkpoint(tiny_mnist, workdir):
    main(["fit", *tiny_args(tiny_mnist), "--trainer.max_epochs=2", "--test_after_fit=false"])
    ckpt = str(run_dir(workdir, 0) / "checkpoints" / "best.ckpt")

    validate = main(["validate", *tiny_args(tiny_mnist), f"--ckpt_path={ckpt}"])
    assert 0 <= validate.trainer.callback_metrics["val/acc"] <= 1

    main(["test", *tiny_args(tiny_mnist), f"--ckpt_path={ckpt}"])
    test_metrics = json.loads((run_dir(workdir, 2) / "metrics.json").read_text())
    assert test_metrics["test_checkpoint"] == ckpt

    main(["predict", *tiny_args(tiny_mnist), f"--ckpt_path={ckpt}"])
    with (run_dir(workdir, 3) / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    expected = [f"t10k-images-idx3-ubyte[{i}]" for i in range(100)]
    assert [row["path"] for row in rows] == expected  # every test image, once, in order
    assert not any(row["error"] for row in rows)
    probs = torch.tensor([[float(row[f"p{k}"]) for k in range(10)] for row in rows])
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(100), atol=1e-5, rtol=0)
    labels = torch.tensor([int(row["label"]) for row in rows])
    assert torch.equal(labels, probs.argmax(dim=1))
    # predict and test agree: the accuracy of the written labels is the test figure
    from torchvision.datasets import MNIST

    targets = MNIST(str(tiny_mnist), train=False).targets
    accuracy = (labels == targets).float().mean().item()
    assert accuracy == pytest.approx(test_metrics["test/acc"], abs=1e-6)


def test_missing_data_is_one_clear_error(workdir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--data.data_dir=absent", "--data.download=false"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: MNIST files train-images-idx3-ubyte")
    assert "Traceback" not in err


def test_python_dash_m_runs_in_a_subprocess(tiny_mnist, tmp_path):
    command = [sys.executable, "-m", "mnist_lit", "fit", *tiny_args(tiny_mnist)]
    command += ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((run_dir(tmp_path, 0) / "metrics.json").read_text())
    assert metrics["train_images"] == 2 * 32
    assert 0 <= metrics["test/acc"] <= 1


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["fit", "--model.nonsense=1"], "nonsense"),
        (["fit", "--data.batch_size=many"], "batch_size"),
        (["fitt"], "fitt"),
        (["fit", "--config=missing.yaml"], "missing.yaml"),
    ],
    ids=["unknown key", "wrong type", "unknown subcommand", "missing config file"],
)
def test_bad_configuration_is_exit_2_naming_it(args, named, workdir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert named in capsys.readouterr().err
    assert not (workdir / "lightning_logs").exists()
