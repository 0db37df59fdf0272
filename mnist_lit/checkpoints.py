"""Checkpoints from anywhere: read without running their code, and checked to be this model's."""

import inspect
import pickle
from pathlib import Path
from typing import Any

import torch

from mnist_lit.module import MNISTClassifier


class CheckpointError(ValueError):
    """A --ckpt_path that is missing, unreadable or of another model; the message says which."""


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


def load_classifier(path: str | Path) -> MNISTClassifier:
    """The MNISTClassifier a checkpoint holds, in eval mode."""
    checkpoint = read_checkpoint(path)
    hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if k[0] != "_"}
    model = MNISTClassifier(**hparams)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
