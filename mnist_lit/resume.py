"""Exact resumption: last.ckpt follows every epoch, and the random states that dropout and
shuffling draw from travel in it, as tensors and plain numbers that `weights_only` loading reads."""

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lit.checkpoints import CheckpointError


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


class BestAndLastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose last.ckpt follows every epoch. Lightning 2.6 refreshes last.ckpt only
    when a top-k checkpoint is saved, so after an epoch without a new best it would resume from
    an older epoch and lose the work since."""

    # Each hook refreshes last.ckpt right after the parent's own save in that hook, so the best
    # checkpoint is always written first (the parent skips a step that is already saved).
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, error: BaseException):
        super().on_exception(trainer, pl_module, error)
        # SIGTERM (preemption) or Ctrl-C: keep the work so far in last.ckpt; other errors may
        # have left the state broken, so they keep the previous checkpoints instead
        if isinstance(error, (SIGTERMException, KeyboardInterrupt)):
            self._refresh_last(trainer)
            if trainer.is_global_zero:
                print(f"Interrupted at step {trainer.global_step}: {self.last_model_path} holds it")

    def _refresh_last(self, trainer: L.Trainer) -> None:
        # skipped when this step is already saved, outside fit and during the sanity check
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def newest_last_checkpoint(logs: Path) -> Path:
    """`--ckpt_path last`: the newest run's last.ckpt. Lightning itself would look only in the
    new run's own, empty, checkpoint folder and quietly start over."""
    found = sorted(logs.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CheckpointError(
            f"--ckpt_path last: no {logs}/version_*/checkpoints/last.ckpt to resume from; pass a "
            "checkpoint path, or leave --ckpt_path out to start a new run"
        )
    return found[-1]
