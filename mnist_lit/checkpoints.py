"""Checkpoints from anywhere: read without running their code, and checked to be this model's;
written so that an interrupted write never costs the previous one."""

import contextlib
import inspect
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_lit.errors import UserError
from mnist_lit.module import MNISTClassifier


class CheckpointError(UserError, ValueError):
    """A --ckpt_path that is missing, unreadable or of another model; the message says which."""


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written (disk full, folder gone, ...); earlier ones are intact."""


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
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed process
                stale.unlink()
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)  # atomic within one file system
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise CheckpointWriteError(
                f"could not write checkpoint {path}: {error.strerror or error}. Checkpoints "
                "written before are kept; free some space or choose another folder with "
                "--checkpoint.dirpath"
            ) from error


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with `weights_only=True` (tensors and plain data, never code) and check the contents."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--ckpt_path {path} does not exist")
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


def check_is_ours(path: Path, checkpoint: Any) -> None:
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} has no state_dict: not a Lightning checkpoint")
    hparams = checkpoint.get("hyper_parameters", {})
    accepted = set(inspect.signature(MNISTClassifier.__init__).parameters) - {"self"}
    unknown = set(hparams) - accepted - {"_instantiator"}
    expected_weights = set(MNISTClassifier().model.state_dict())
    weights = {k.removeprefix("model.") for k in checkpoint["state_dict"] if k.startswith("model.")}
    if unknown or weights != expected_weights:
        detail = f"unknown settings {sorted(unknown)}" if unknown else "other layers"
        raise CheckpointError(f"{path} is a checkpoint of a different model ({detail})")
    for name, tensor in checkpoint["state_dict"].items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not tensor.isfinite().all():
            raise CheckpointError(
                f"{path} holds non-finite weights ({name} has NaN or infinite values): a diverged "
                "run's; use an earlier checkpoint"
            )


def load_classifier(path: str | Path) -> MNISTClassifier:
    """The MNISTClassifier a checkpoint holds, in eval mode."""
    checkpoint = read_checkpoint(path)
    hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if k[0] != "_"}
    model = MNISTClassifier(**hparams)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
