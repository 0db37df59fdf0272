"""Checkpoints that keep a run whole: the best over the whole run after a resume, a stop in
validation or by max_time saved where it can resume, never a checkpoint of broken weights."""

import json
import shutil

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lit.__main__ import main
from mnist_lit.cli import make_cli
from mnist_lit.training.checkpoint_io import CheckpointError, read_checkpoint
from tests.helpers import (
    DETERMINISTIC,
    NO_TEST,
    SEVERAL_RUNS,
    exit_status,
    scalars,
    tiny_args,
)


@SEVERAL_RUNS
def test_resumed_run_keeps_the_best_of_the_epochs_before(tiny_mnist, workdir):
    # lr 3e-2 with this seed peaks in epoch 0 and gets worse: the best lies before the resume
    run = ["fit", *tiny_args(tiny_mnist), DETERMINISTIC, "--model.lr=3e-2", "--seed_everything=2"]
    main([*run, "--trainer.max_epochs=3"])  # version_0: unbroken
    main([*run, "--trainer.max_epochs=1", "--test_after_fit=false"])  # version_1: stopped
    resumed = main([*run, "--trainer.max_epochs=3", "--ckpt_path=last"])  # continues version_1
    logs = workdir / "lightning_logs"
    unbroken, continued = logs / "version_0", logs / "version_1"
    accuracy = scalars(unbroken, "accuracy/val")
    assert len(accuracy) == 3 and accuracy[0] > max(accuracy[1:])  # the premise
    assert scalars(continued, "accuracy/val") == accuracy
    assert scalars(continued, "accuracy/val_best") == scalars(unbroken, "accuracy/val_best")
    first, second = (
        json.loads((run / "metrics.json").read_text()) for run in (unbroken, continued)
    )
    assert second["val/acc_best"] == first["val/acc_best"] == pytest.approx(accuracy[0])
    assert second["test/acc"] == first["test/acc"]  # the same, best, epoch was tested
    assert torch.load(second["best_checkpoint"], weights_only=True)["epoch"] == 0
    assert resumed.trainer.checkpoint_callback.best_model_score == pytest.approx(accuracy[0])


class StopInValidation(L.Callback):
    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1 and not trainer.sanity_checking:
            raise KeyboardInterrupt  # as Ctrl-C would, after epoch 1's training


@SEVERAL_RUNS
def test_stop_in_validation_keeps_the_epoch_before_and_resume_validates(
    tiny_mnist, workdir, capsys
):
    run = ["fit", *tiny_args(tiny_mnist), DETERMINISTIC, NO_TEST, "--trainer.max_epochs=2"]
    assert exit_status(run, callbacks=[StopInValidation()]) == 130
    folder = workdir / "lightning_logs" / "version_0"
    assert torch.load(folder / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 8
    assert "Interrupted during validation" in capsys.readouterr().out
    main([*run, "--ckpt_path=last"])
    assert len(scalars(folder, "accuracy/val")) == 2  # epoch 1 was trained again, then validated
    losses = scalars(folder, "loss/train")
    assert len(losses) >= 2 and all(loss == loss for loss in losses)  # no NaN


@SEVERAL_RUNS
def test_max_time_stop_is_saved_where_it_stopped_and_said_so(tiny_mnist, workdir):
    class SlowBatches(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 12:  # 4 steps into epoch 1
                trainer.should_stop = True  # what --trainer.max_time's timer does

    run = ["fit", *tiny_args(tiny_mnist), DETERMINISTIC, NO_TEST, "--trainer.max_epochs=3"]
    make_cli(run, callbacks=[SlowBatches()])
    folder = workdir / "lightning_logs" / "version_0"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["global_step"], metrics["stopped_mid_epoch"]) == (
        1,
        12,
        True,
    )
    assert torch.load(folder / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 12
    main([*run, "--ckpt_path=last"])
    metrics = json.loads((folder / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["global_step"], metrics["stopped_mid_epoch"]) == (
        3,
        24,
        False,
    )
    assert metrics["train_images"] == 3 * 256  # the rest of epoch 1 was trained, not skipped


class SigtermInSanityCheck(L.Callback):
    def on_sanity_check_start(self, trainer, pl_module) -> None:
        raise SIGTERMException  # what Lightning raises when SIGTERM arrives


def test_sigterm_before_any_checkpoint_says_there_is_nothing_to_resume(tiny_mnist, workdir, capsys):
    assert exit_status(["fit", *tiny_args(tiny_mnist)], [SigtermInSanityCheck()]) == 143
    printed = capsys.readouterr()
    assert "Interrupted before the first checkpoint: there is nothing to resume" in printed.out
    assert "--ckpt_path last" not in printed.out + printed.err
    assert not list(workdir.rglob("*.ckpt"))


def test_non_finite_weights_are_refused_naming_the_tensor(tiny_run, workdir, capsys):
    checkpoint = torch.load(tiny_run[0] / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["state_dict"]["model.fc2.bias"][3] = float("nan")
    torch.save(checkpoint, workdir / "nan.ckpt")
    with pytest.raises(CheckpointError, match=r"non-finite weights \(model.fc2.bias"):
        read_checkpoint(workdir / "nan.ckpt")
    data = tiny_run[0].parents[1] / "data"
    assert exit_status(["test", *tiny_args(data), "--ckpt_path=nan.ckpt"]) == 1
    assert exit_status(["export", "--ckpt_path=nan.ckpt"]) == 1
    assert capsys.readouterr().err.count("non-finite weights") == 2
    assert not (workdir / "model.onnx").exists()


@SEVERAL_RUNS
def test_a_resume_from_a_copied_checkpoint_keeps_a_best_of_its_own(tiny_mnist, workdir):
    """A checkpoint copied out of its run starts a new run: the copy's record names the old
    run's best.ckpt, which must never be what the new run tests or calls its best."""
    run = ["fit", *tiny_args(tiny_mnist), DETERMINISTIC, "--seed_everything=3"]
    main([*run, "--trainer.max_epochs=2", NO_TEST])  # the run the copy comes from: version_0
    shutil.copy(workdir / "lightning_logs/version_0/checkpoints/last.ckpt", workdir / "copy.ckpt")
    main([*run, "--trainer.max_epochs=3", "--ckpt_path=copy.ckpt"])  # a new run: version_1
    best = (workdir / "lightning_logs/version_1/checkpoints/best.ckpt").resolve()
    metrics = json.loads((best.parents[1] / "metrics.json").read_text())
    assert metrics["best_checkpoint"] == metrics["test_checkpoint"] == str(best)


@SEVERAL_RUNS
@pytest.mark.parametrize("resumed_from", ["its own folder", "another project", "a symlink"])
def test_best_ckpt_after_a_resume_is_this_runs_best(
    tiny_mnist, tmp_path, monkeypatch, resumed_from
):
    """Resumed with an absolute --ckpt_path, from the folder the run started in or from another
    project's folder: the next best replaces best.ckpt (no best-v1.ckpt), and the test after fit
    and metrics.json name this run's best, never the other project's."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    run = ["fit", *tiny_args(tiny_mnist), DETERMINISTIC, "--seed_everything=3", "--model.lr=2e-5"]
    monkeypatch.chdir(project)
    main([*run, "--trainer.max_epochs=1", NO_TEST])
    folder = project / "lightning_logs" / "version_0"
    if resumed_from == "another project":
        monkeypatch.chdir(elsewhere)  # which has a run of its own, of an untrained model
        main([*run, "--trainer.max_epochs=1", NO_TEST, "--trainer.limit_train_batches=1"])
    last = (folder / "checkpoints" / "last.ckpt").resolve()
    if resumed_from == "a symlink":  # the same run, reached through a link to its project
        (tmp_path / "link").symlink_to(project)
        last = tmp_path / "link" / last.relative_to(project)
    main([*run, "--trainer.max_epochs=3", f"--ckpt_path={last}"])
    accuracy = scalars(folder, "accuracy/val")
    assert len(accuracy) == 3 and max(accuracy[1:]) > accuracy[0]  # a new best after the resume
    best = folder / "checkpoints" / "best.ckpt"
    assert sorted(p.name for p in best.parent.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(best, weights_only=True)["epoch"] == accuracy.index(max(accuracy))
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["best_checkpoint"] == metrics["test_checkpoint"] == str(best.resolve())
    assert metrics["val/acc_best"] == pytest.approx(max(accuracy))
