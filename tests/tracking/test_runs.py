"""A run's folder is its own: claimed for it alone, even when runs start together, and
whole below --trainer.default_root_dir."""

import json
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from mnist_lit.__main__ import main
from mnist_lit.tracking.runs import claim_version
from mnist_lit.training.checkpoint_io import read_checkpoint
from tests.helpers import (
    SEVERAL_RUNS,
    module_command,
    module_env,
    tiny_args,
)


def test_versions_claimed_together_are_all_different(tmp_path):
    claimed = []
    threads = [
        threading.Thread(target=lambda: claimed.append(claim_version(tmp_path))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == list(range(8))


@pytest.mark.slow  # real subprocesses, started together
def test_runs_started_together_in_one_folder_keep_their_own_records(tiny_mnist, workdir):
    rates = ["1e-3", "2e-3", "3e-3"]  # more processes than cores, all claiming at once
    env = module_env()
    base = module_command("fit", *tiny_args(tiny_mnist))
    base += ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    runs = [
        subprocess.Popen(
            [*base, f"--model.lr={rate}"], cwd=workdir, env=env, stderr=subprocess.PIPE, text=True
        )
        for rate in rates
    ]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()[-2000:]
    folders = sorted((workdir / "lightning_logs").iterdir())
    assert len(folders) == len(rates)
    seen = []
    for folder in folders:
        lr = yaml.safe_load((folder / "config.yaml").read_text())["model"]["lr"]
        assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
            "best.ckpt",
            "last.ckpt",
        ]
        for checkpoint in (folder / "checkpoints").iterdir():
            assert read_checkpoint(checkpoint)["hyper_parameters"]["lr"] == lr, checkpoint
        metrics = json.loads((folder / "metrics.json").read_text())
        assert Path(metrics["best_checkpoint"]).parent == (folder / "checkpoints").resolve()
        assert metrics["test_checkpoint"] == metrics["best_checkpoint"]
        seen.append(lr)
    assert sorted(seen) == sorted(float(rate) for rate in rates)


@SEVERAL_RUNS
def test_default_root_dir_holds_the_whole_run(tiny_mnist, workdir):
    main(["fit", *tiny_args(tiny_mnist), "--trainer.max_epochs=1", "--trainer.default_root_dir=r"])
    assert sorted(p.name for p in workdir.iterdir()) == ["data", "r"]
    run = workdir / "r" / "lightning_logs" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert Path(metrics["best_checkpoint"]) == (run / "checkpoints" / "best.ckpt").resolve()
