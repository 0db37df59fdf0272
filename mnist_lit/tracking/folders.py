"""The folders a run writes to: checked writable before any work, and a full disk under them
said in one line with what was kept."""

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import lightning as L

from mnist_lit.errors import UserError


class OutputFolderError(UserError, PermissionError):
    """A folder the run must write to cannot be written."""


class RunFolderFullError(UserError, OSError):
    """The disk under the run's folder filled up while the run wrote its events or files."""


class RunFolderGoneError(UserError, FileNotFoundError):
    """The run's folder was deleted (or moved) while the run wrote into it."""


# a write refused for want of space: a full disk, or the user's quota on it
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def check_writable(folder: Path, flag: str) -> None:
    """Raise OutputFolderError unless `folder` exists as a writable folder or can be created.
    Nothing is created: under DDP every process checks, and only rank 0 makes the folders."""
    existing = folder.absolute()
    try:
        while not existing.exists():
            existing = existing.parent
    except OSError as error:  # e.g. a name longer than the file system allows
        raise OutputFolderError(f"cannot write to {folder}: {error.strerror}") from None
    if not existing.is_dir():
        problem = f"{existing} is a file"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    else:
        return
    raise OutputFolderError(f"cannot write to {folder}: {problem}. Choose another with {flag}")


@contextlib.contextmanager
def reporting_full_disk(trainer: L.Trainer, fix: str = "free some space there") -> Iterator[None]:
    """A full disk under the run's folder ends the run as one `error:` line. TensorBoard's event
    writer fails in its own thread and raises the error again at the logger's next write (see
    console.quiet_event_writer_thread); config.yaml, hparams.yaml and metrics.json fail in
    place. What was written before stays: the checkpoints, and the events up to the failure."""
    try:
        yield
    except OSError as error:
        if isinstance(error, UserError):
            raise  # checkpoints and predictions say so themselves, with their own flags
        # the logger's own folder, not trainer.log_dir: that is a collective call under DDP
        folder = Path(getattr(trainer.logger, "log_dir", None) or trainer.default_root_dir)
        written = Path(os.fsdecode(error.filename or "")).absolute()
        if error.errno == errno.ENOENT and written.is_relative_to(folder.absolute()):
            raise RunFolderGoneError(
                f"{folder} was deleted or moved while the run wrote into it; the run stopped. "
                "Start a new run, or resume from a copy of its last.ckpt with --ckpt_path"
            ) from None
        if error.errno not in NO_SPACE:
            raise
        where = error.filename or f"the run's files in {folder}"
        raise RunFolderFullError(
            f"could not write {where}: {error.strerror}. The run stopped; the checkpoints and "
            f"events written before are kept; {fix}"
        ) from None


def check_run_folders(trainer: L.Trainer) -> None:
    """The log folder and every checkpoint folder can be written: Lightning would find out at the
    first write (the logger's folder, or the first checkpoint an epoch later), with a traceback."""
    log_flag = (
        "--trainer.logger.init_args.save_dir" if trainer.logger else "--trainer.default_root_dir"
    )
    logs = getattr(trainer.logger, "root_dir", None) or trainer.default_root_dir
    check_writable(Path(logs), log_flag)
    for callback in trainer.checkpoint_callbacks:
        if callback.dirpath:
            check_writable(Path(callback.dirpath), "--checkpoint.dirpath")
