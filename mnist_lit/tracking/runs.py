"""A run's folder: claimed for it alone, checked writable before any work, and found again."""

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from mnist_lit.errors import UserError
from mnist_lit.tracking.tensorboard import tensorboard_tag


class OutputFolderError(UserError, PermissionError):
    """A folder the run must write to cannot be written."""


class RunFolderFullError(UserError, OSError):
    """The disk under the run's folder filled up while the run wrote its events or files."""


# a write refused for want of space: a full disk, or the user's quota on it
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def run_folder(trainer: L.Trainer) -> Path:
    """The run's log folder. Under DDP, `trainer.log_dir` is a broadcast from rank 0, so every
    process must ask for it, not only the one that writes."""
    return Path(trainer.log_dir or trainer.default_root_dir)


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


def claim_version(root: Path) -> int:
    """The next free version_N below `root`, created here: mkdir fails for all but one of the
    processes that try the same N, so runs started together each get their own folder."""
    check_writable(root, "--trainer.logger.init_args.save_dir")
    root.mkdir(parents=True, exist_ok=True)
    numbers = [p.name.removeprefix("version_") for p in root.glob("version_*")]
    version = max((int(n) for n in numbers if n.isdigit()), default=-1) + 1
    while True:
        try:
            (root / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


class RunLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger, whose version_N folder is claimed when it is first named.
    Lightning's own logger takes "the highest N + 1" without claiming it, and two runs started
    together in one folder write into the same one. It writes the module's metrics under their
    TensorBoard tags (tracking.TENSORBOARD_TAGS) and leaves out Lightning's `epoch` scalar."""

    def __init__(self, save_dir: str | None = None, **kwargs: Any) -> None:
        """Args:
        save_dir: Folder of the run folders' parent (`name`); the trainer's default_root_dir
            when not given.
        """
        super().__init__(save_dir or ".", **kwargs)
        self.claimed: int | str | None = kwargs.get("version")

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        # Lightning adds the epoch to every write: a chart of a counter, first in TensorBoard
        tagged = {tensorboard_tag(k): v for k, v in metrics.items() if k != "epoch"}
        super().log_metrics(tagged, step)

    @property
    def version(self) -> int | str:
        if self.claimed is None:
            # Only rank 0 names the run: the others are told its folder (trainer.log_dir)
            on_rank_zero = rank_zero_only.rank == 0
            self.claimed = claim_version(Path(self.root_dir)) if on_rank_zero else super().version
        return self.claimed


@contextlib.contextmanager
def reporting_full_disk(trainer: L.Trainer, fix: str = "free some space there") -> Iterator[None]:
    """A full disk under the run's folder ends the run as one `error:` line. TensorBoard's event
    writer fails in its own thread and raises the error again at the logger's next write (see
    console.quiet_event_writer_thread); config.yaml, hparams.yaml and metrics.json fail in
    place. What was written before stays: the checkpoints, and the events up to the failure."""
    try:
        yield
    except OSError as error:
        if isinstance(error, UserError) or error.errno not in NO_SPACE:
            raise  # checkpoints and predictions say so themselves, with their own flags
        # the logger's own folder, not trainer.log_dir: that is a collective call under DDP
        folder = Path(getattr(trainer.logger, "log_dir", None) or trainer.default_root_dir)
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


def place_logs(config: Namespace) -> None:
    """The logger writes below --trainer.default_root_dir unless given its own save_dir."""
    logger = config.trainer.get("logger")
    if isinstance(logger, Namespace) and logger.init_args.get("save_dir", ".") is None:
        logger.init_args.save_dir = config.trainer.get("default_root_dir") or "."


def place_evaluation_logs(subcommand: str, config: Namespace, run: Path | None) -> None:
    """`validate`, `test` and `predict` write into the run whose checkpoint they evaluate, in a
    folder named after the subcommand (`version_N/test/`), or below `lightning_logs/test/` for a
    checkpoint from elsewhere: never as a version_N of their own, which TensorBoard, `report`
    and `--ckpt_path last` would take for a training run. A logger given its own `version`
    (or any other folder scheme of the user's) is left as it is."""
    logger = config.trainer.get("logger")
    if not isinstance(logger, Namespace) or "name" not in logger.init_args:
        return
    arguments = logger.init_args
    if arguments.get("version") is not None:
        return
    if run is not None:
        if run.is_relative_to(Path.cwd()):  # said as the user would type it
            run = run.relative_to(Path.cwd())
        arguments.save_dir, arguments.name, arguments.version = str(run), subcommand, ""
    else:
        arguments.name = f"{arguments.get('name') or 'lightning_logs'}/{subcommand}"


def log_root(config) -> Path:
    """Where this run's TensorBoard logger puts its version_N folders."""
    logger = config.trainer.get("logger")
    arguments = getattr(logger, "init_args", None) or {}
    save_dir = arguments.get("save_dir") or config.trainer.get("default_root_dir") or "."
    return Path(save_dir) / (arguments.get("name") or "lightning_logs")
