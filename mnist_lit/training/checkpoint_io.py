"""Checkpoints from anywhere: read without running their code, and checked to be this model's;
written so that an interrupted write never costs the previous one."""

import contextlib
import inspect
import os
import pickle
import shutil
import threading
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_lit.errors import UserError
from mnist_lit.module import MNISTClassifier


class CheckpointError(UserError, ValueError):
    """A --ckpt_path that is missing, unreadable or of another model; the message says which."""


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written (disk full, folder gone, ...); earlier ones are intact."""


# set while a checkpoint is written: Ctrl-C then waits for the write to end (interrupts.py), as
# a KeyboardInterrupt inside torch's zip writer would come out as a failed write
WRITING = threading.Event()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in its destination folder, forces it to disk,
    then renames it over the destination. A process killed mid-write, or a full disk, leaves the
    previous checkpoint whole. (Lightning's own writer stages the file in the system's temporary
    folder; moving it onto another file system is a copy that can be cut short.)"""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        WRITING.set()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed process
                stale.unlink()
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)  # atomic within one file system
        except (OSError, RuntimeError) as error:  # torch's zip writer raises RuntimeError
            reason = write_failure(error, path.parent)
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise CheckpointWriteError(
                f"could not write checkpoint {path}: {reason}. Checkpoints written before are "
                "kept; free some space or choose another folder with --checkpoint.dirpath"
            ) from error
        finally:
            WRITING.clear()


def write_atomically(trainer: L.Trainer) -> None:
    """Use AtomicCheckpointIO unless the user configured another writer (a plugin in the
    trainer's config could not be written back into config.yaml, so it is set here)."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def write_failure(error: Exception, folder: Path) -> str:
    """Why a write failed, in words: torch reports a full disk as `[enforce fail at
    inline_container.cc] unexpected pos`, so the folder's free space is asked directly."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    with contextlib.suppress(OSError):
        if shutil.disk_usage(folder).free < 1 << 20:
            return "No space left on device"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with `weights_only=True` (tensors and plain data, never code) and check the contents."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"--ckpt_path {path} is a folder; pass a .ckpt file in it")
    if path.exists() and not path.is_file():
        raise CheckpointError(f"--ckpt_path {path} is not a regular file (a FIFO or device)")
    if not path.exists():
        raise CheckpointError(f"--ckpt_path {path} does not exist")
    check_archive_sizes(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" not in str(error):  # garbage the unpickler could not parse, not a payload
            message = f"{path} is not a readable checkpoint (corrupt pickle data)"
            raise CheckpointError(message) from None
        named = [line for line in str(error).splitlines() if "GLOBAL" in line][0]
        raise CheckpointError(
            f"{path} holds Python objects beyond tensors and plain data; refused, since loading "
            f"them could run code ({named.strip()})"
        ) from None
    except Exception as error:  # torch raises RuntimeError, EOFError, ... for damaged files
        raise CheckpointError(
            f"{path} is not a readable checkpoint, truncated or not a PyTorch file "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None
    check_is_ours(path, checkpoint)
    return checkpoint


def check_archive_sizes(path: Path) -> None:
    """torch.save stores tensors uncompressed in a zip archive: one that declares far more data
    than the file holds (a zip bomb) is refused before anything is inflated."""
    if not zipfile.is_zipfile(path):
        return  # the legacy format, or not a checkpoint at all: torch.load says which
    with contextlib.suppress(zipfile.BadZipFile), zipfile.ZipFile(path) as archive:
        declared = sum(entry.file_size for entry in archive.infolist())
        if declared > 10 * path.stat().st_size + (1 << 26):
            raise CheckpointError(
                f"{path} declares {declared / 2**20:,.0f} MiB of contents in a file of "
                f"{path.stat().st_size / 2**20:,.1f} MiB: not a checkpoint torch.save wrote"
            )


def check_is_ours(path: Path, checkpoint: Any) -> None:
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path} has no state_dict: not a Lightning checkpoint")
    hparams = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{path} has hyper_parameters that are not settings")
    accepted = set(inspect.signature(MNISTClassifier.__init__).parameters) - {"self"}
    unknown = set(hparams) - accepted - {"_instantiator"}
    if unknown:
        raise CheckpointError(
            f"{path} is a checkpoint of a different model (unknown settings {sorted(unknown)})"
        )
    try:  # the model its settings describe, whose weights must match the checkpoint's exactly
        expected = MNISTClassifier(**{k: v for k, v in hparams.items() if k[0] != "_"})
    except (TypeError, ValueError) as error:
        message = f"{path} holds settings that cannot build the model ({error})"
        raise CheckpointError(message) from None
    shapes = {k: tuple(v.shape) for k, v in expected.state_dict().items()}
    weights = checkpoint["state_dict"]
    found = {k: tuple(v.shape) if torch.is_tensor(v) else None for k, v in weights.items()}
    if found != shapes:
        differ = sorted(k for k in shapes.keys() | found.keys() if shapes.get(k) != found.get(k))
        raise CheckpointError(
            f"{path} is a checkpoint of a different model: its weights do not match its settings "
            f"({', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''})"
        )
    for name, tensor in checkpoint["state_dict"].items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not tensor.isfinite().all():
            raise CheckpointError(
                f"{path} holds non-finite weights ({name} has NaN or infinite values): a diverged "
                "run's; use an earlier checkpoint"
            )


def load_classifier(path: str | Path) -> MNISTClassifier:
    """The MNISTClassifier a checkpoint holds, in eval mode."""
    checkpoint = read_checkpoint(path)
    saved = checkpoint.get("hyper_parameters") or {}  # none saved: the defaults
    hparams = {k: v for k, v in saved.items() if k[0] != "_"}
    model = MNISTClassifier(**hparams)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
