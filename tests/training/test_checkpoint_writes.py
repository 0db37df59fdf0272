"""Checkpoint writes: a kill or a full disk mid-write never costs the previous checkpoint; an
output folder that cannot be written stops the run before it trains; a disk that fills under the
run's TensorBoard events ends it with one line."""

import contextlib
import errno
import shutil
import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch
from tensorboard.summary.writer.record_writer import RecordWriter

from mnist_lit.__main__ import main
from mnist_lit.cli import make_cli
from mnist_lit.training.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError
from tests.helpers import REPO, exit_status, tiny_args

KILLED_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys, torch
    from mnist_lit.training.checkpoint_io import AtomicCheckpointIO

    path = sys.argv[1]
    AtomicCheckpointIO().save_checkpoint({"weights": torch.zeros(1000)}, path)

    def save_then_die(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint" * 1000)
        file.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save_then_die
    AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(1000)}, path)
    """
)


@pytest.mark.slow  # a real subprocess
def test_sigkill_while_writing_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    child = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(path)], cwd=REPO)
    assert child.returncode == -9  # really killed, in the middle of the second write
    leftovers = list(tmp_path.glob(".last.ckpt.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.zeros(1000))
    AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(1000)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.ones(1000))
    assert not list(tmp_path.glob(".*.tmp"))  # the killed write's leftover is cleared


def disk_full(obj, file, *args, **kwargs):
    file.write(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_is_one_error_naming_the_path_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "best.ckpt"
    AtomicCheckpointIO().save_checkpoint({"weights": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointWriteError, match=f"{path}: No space left on device"):
        AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.zeros(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]  # no temporary left


def test_fit_on_a_full_disk_stops_with_one_line(tiny_mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *tiny_args(tiny_mnist), "--trainer.max_epochs=1"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "error: could not write checkpoint" in err and "No space left on device" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["--trainer.logger.init_args.save_dir", "--checkpoint.dirpath"])
def test_unwritable_output_folder_stops_before_training(
    tiny_mnist, tmp_path, flag, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder should go\n")  # unwritable, even for root
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *tiny_args(tiny_mnist), flag, str(blocker / "runs")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert f"error: cannot write to {blocker / 'runs'}" in err
    assert flag in err  # the message names the option to change
    assert not list(tmp_path.rglob("*.ckpt"))


def test_an_over_long_folder_name_is_one_error(tiny_mnist, workdir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *tiny_args(tiny_mnist), f"--trainer.default_root_dir={'x' * 300}"])
    assert exit_.value.code == 1
    assert "File name too long" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["predict", "--predictions_file=a_folder"], "a_folder is a folder, not a file"),
        (["predict", "--predictions_file=a_file/out.csv"], "a_file is a file"),
        (["test", "--trainer.default_root_dir=a_file"], "cannot write to a_file"),
    ],
    ids=["predictions file is a folder", "its parent is a file", "log folder is a file"],
)
def test_evaluation_outputs_that_cannot_be_written_stop_before_the_work(
    tiny_mnist, workdir, args, said, capsys
):
    (workdir / "a_folder").mkdir()
    (workdir / "a_file").write_text("a file where a folder should go\n")
    with pytest.raises(SystemExit) as exit_:
        main([*args, *tiny_args(tiny_mnist), "--untrained=true"])
    assert exit_.value.code == 1
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and said in err and "Traceback" not in err
    assert "Predicted" not in out and "Test metric" not in out  # before the work


def test_a_real_full_disk_stops_fit_with_one_line_and_no_leftovers(
    tiny_mnist, workdir, small_disk, capsys
):
    # the model with its Adam state is ~17 MB: the first checkpoint cannot fit in 4 MiB
    args = ["fit", *tiny_args(tiny_mnist), f"--checkpoint.dirpath={small_disk}"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "error: could not write checkpoint" in err and "No space left on device" in err
    assert list(small_disk.iterdir()) == []  # no temporary file left filling the disk


def test_a_full_disk_under_the_predictions_file_is_one_line_and_no_partial_file(
    tiny_run, tiny_run_copy, small_disk, capsys
):
    with contextlib.suppress(OSError), (small_disk / "filler").open("wb") as filler:
        filler.write(b"\0" * (5 << 20))  # fills the disk to its last byte
    checkpoint = tiny_run_copy / "checkpoints" / "best.ckpt"
    with pytest.raises(SystemExit) as exit_:
        main(["predict", *tiny_args(tiny_run[0].parents[1] / "data"), f"--ckpt_path={checkpoint}",
              f"--predictions_file={small_disk / 'out.csv'}"])  # fmt: skip
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "error: could not write" in err and "No space left on device" in err
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_a_real_full_disk_under_the_tensorboard_events_is_one_line(
    tiny_mnist, workdir, small_disk, capsys
):
    with contextlib.suppress(OSError), (small_disk / "filler").open("wb") as filler:
        filler.write(b"\0" * ((4 << 20) - (40 << 10)))  # 40 KiB left: full by the first pictures
    args = ["fit", *tiny_args(tiny_mnist), f"--trainer.default_root_dir={small_disk}",
            f"--checkpoint.dirpath={workdir}/checkpoints", "--trainer.max_epochs=3"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    # the writer fails in its own thread: neither its traceback nor the main thread's is shown
    assert err.count("error: could not write") == 1 and "No space left on device" in err
    assert "Traceback" not in err and "Exception in thread" not in err
    assert "--trainer.default_root_dir" in err


def test_a_failed_event_write_mid_run_is_one_line(tiny_mnist, workdir, monkeypatch, capsys):
    # the same as above, without root: the events' file refuses its fifth record
    write = RecordWriter.write
    records = []

    def write_until_full(self, data):
        records.append(data)
        if len(records) > 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(self, data)

    monkeypatch.setattr(RecordWriter, "write", write_until_full)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *tiny_args(tiny_mnist), "--trainer.max_epochs=2"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not write the run's files in lightning_logs/version_0")
    assert "No space left on device" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_the_cli_writes_checkpoints_atomically(tiny_mnist, monkeypatch):
    cli = make_cli(tiny_args(tiny_mnist), run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


class DeletesTheRunFolder(L.Callback):
    """Deletes the run's folder in the second epoch, as a user cleaning up too early would."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 0:
            shutil.rmtree(trainer.log_dir)
            # the next events write, now rather than whenever the writer's thread gets to it
            trainer.logger.log_metrics({"loss/train_step": 1.0}, step=trainer.global_step)
            trainer.logger.experiment.flush()


def test_a_run_folder_deleted_mid_run_is_one_line(tiny_mnist, workdir, capsys):
    quick = ["--trainer.max_epochs=3", "--trainer.limit_train_batches=2"]
    args = ["fit", *tiny_args(tiny_mnist), *quick]
    assert exit_status(args, [DeletesTheRunFolder()]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: lightning_logs/version_0 was deleted or moved while the run")
    assert "Traceback" not in err and len(err.splitlines()) == 1
