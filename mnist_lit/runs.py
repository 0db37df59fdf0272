"""A run's folder: where a run writes, and whether it can, checked before any work."""

import os
from pathlib import Path

import lightning as L

from mnist_lit.errors import UserError


class OutputFolderError(UserError, PermissionError):
    """A folder the run must write to cannot be written."""


def run_folder(trainer: L.Trainer) -> Path:
    """The run's log folder. Under DDP, `trainer.log_dir` is a broadcast from rank 0, so every
    process must ask for it, not only the one that writes."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def check_writable(folder: Path, flag: str) -> None:
    """Raise OutputFolderError unless `folder` exists as a writable folder or can be created.
    Nothing is created: under DDP every process checks, and only rank 0 makes the folders."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        problem = f"{existing} is a file"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    else:
        return
    raise OutputFolderError(f"cannot write to {folder}: {problem}. Choose another with {flag}")


def check_run_folders(trainer: L.Trainer) -> None:
    """The log folder and every checkpoint folder can be written: Lightning would find out at the
    first write (the logger's folder, or the first checkpoint an epoch later), with a traceback."""
    log_flag = (
        "--trainer.logger.init_args.save_dir" if trainer.logger else "--trainer.default_root_dir"
    )
    check_writable(Path(trainer.log_dir or trainer.default_root_dir), log_flag)
    for callback in trainer.checkpoint_callbacks:
        if callback.dirpath:
            check_writable(Path(callback.dirpath), "--checkpoint.dirpath")


def log_root(config) -> Path:
    """Where this run's TensorBoard logger puts its version_N folders."""
    logger = config.trainer.get("logger")
    arguments = getattr(logger, "init_args", None) or {}
    save_dir = arguments.get("save_dir") or config.trainer.get("default_root_dir") or "."
    return Path(save_dir) / (arguments.get("name") or "lightning_logs")
