"""The random states of a process in its checkpoints, so that a resumed run shuffles and drops
out exactly as an unbroken run would; and the seeds that start them."""

import random
from typing import Any

import lightning as L
import numpy as np
import torch

from mnist_lit.errors import ConfigError

SEEDS = range(2**32)  # what numpy (and so Lightning's seed_everything) accepts


def check_seed(seed: object, what: str = "--seed_everything") -> None:
    """A seed numpy accepts, as one error naming it (Lightning raises a traceback)."""
    if isinstance(seed, int) and not isinstance(seed, bool) and seed not in SEEDS:
        raise ConfigError(f"{what} {seed}: a seed is from 0 to {SEEDS[-1]} (numpy's range)")


def collect_random_states() -> dict[str, Any]:
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RandomStatesInCheckpoint(L.Callback):
    """Saves this process's random states with each checkpoint and restores them on resume, so an
    epoch-end checkpoint continues with the same shuffling and dropout as an unbroken run.
    Under DDP the checkpoint holds rank 0's states; the other ranks resume from their seeds."""

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["random_states"] = collect_random_states()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if trainer.world_size == 1:
            self.pending = checkpoint.get("random_states")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # Restored here, not on loading: the sanity check in between draws from the global
        # generator (every DataLoader iterator takes a seed from it), an unbroken run does not.
        if self.pending is not None:
            restore_random_states(self.pending)
            self.pending = None
