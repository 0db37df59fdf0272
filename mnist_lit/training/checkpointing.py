"""When a run's checkpoints are written and what they record: best.ckpt by validation accuracy,
also after any resume, last.ckpt after every epoch and when a stop cuts training short, and
never non-finite weights. (The files: checkpoint_io.py; the random states inside:
random_states.py; which checkpoint a command continues from: resume.py.)"""

import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lit.errors import UserError


class BestAndLastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (configured by `--checkpoint.*`) whose last.ckpt follows every
    epoch. Lightning 2.6 rewrites last.ckpt only when it saves a top-k checkpoint, so after an
    epoch without a new best a resume would go back to an older epoch and lose the work since.

    last.ckpt is written after the epoch's best.ckpt, so it records the best so far; also every
    `every_n_train_steps` steps when that is set, and at the current step when SIGTERM
    (preemption) or Ctrl-C stops training.
    """

    def __init__(
        self,
        monitor: str | None = "val/acc",
        mode: str = "max",
        filename: str | None = "best",
        save_last: bool | None = True,
        **kwargs: Any,
    ) -> None:
        kwargs.update(monitor=monitor, mode=mode, filename=filename, save_last=save_last)
        super().__init__(**kwargs)
        # Written here, at every epoch's end; Lightning's own writes would only repeat some.
        self.save_last_every_epoch, self.save_last = bool(self.save_last), None
        self.save_last_every_n_steps = kwargs.get("every_n_train_steps") or 0
        self.fitting, self.continuing, self.batch_idx = False, False, -1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.trainer, self.fitting = trainer, stage == "fit"

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A run resumed from its own checkpoints (its folder, however spelled or reached)
        # continues its record of its best (Lightning forgets the best when the spelling
        # differs). Resumed from a checkpoint outside it (a copy), the record names files that
        # are not this run's: it starts afresh. Testing or predicting leaves it as it was.
        path = self.trainer.ckpt_path if self.fitting else None
        self.continuing = bool(path and self.dirpath and in_folder(path, self.dirpath))
        if self.continuing:
            super().load_state_dict({**state_dict, "dirpath": self.dirpath})

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self.continuing:
            self.name_files_in(self.dirpath)

    def name_files_in(self, folder: str) -> None:
        """A resumed run's record names its checkpoints as the process that wrote them did:
        relative to that process's working folder, or in a folder since moved or reached
        through a link. They are this folder's files: named so, the next best replaces
        best.ckpt (Lightning would write best-v1.ckpt beside it, and delete what the old name
        now means), and the test after fit reads this run's best, not a file that the old name
        finds from the new working folder."""

        def here(path: str) -> str:
            return os.path.join(folder, os.path.basename(path)) if path else path

        self.best_model_path = here(self.best_model_path)
        self.kth_best_model_path = here(self.kth_best_model_path)
        self.last_model_path = here(self.last_model_path)
        self.best_k_models = {here(path): score for path, score in self.best_k_models.items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.batch_idx = batch_idx
        every = self.save_last_every_n_steps
        # A stop inside the epoch (--trainer.max_time) is saved where it happened, so that the
        # resumed run trains the epoch's remaining batches instead of skipping them.
        stopping_early = trainer.should_stop and cut_short(trainer, batch_idx)
        if stopping_early or (every and trainer.global_step % every == 0):
            self.write_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)  # best.ckpt, when this epoch is the best
        if not cut_short(trainer, self.batch_idx):
            self.write_last(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, error: BaseException):
        super().on_exception(trainer, pl_module, error)
        # SIGTERM or Ctrl-C: keep the work so far. Other errors may have left the state broken,
        # so they keep the previous checkpoints instead.
        interrupted = isinstance(error, (SIGTERMException, KeyboardInterrupt))
        if not interrupted or trainer.state.fn != TrainerFn.FITTING:
            return
        # Stopped in validation, the epoch's training is done but its validation is not, and a
        # checkpoint written now would resume after it: that epoch could never be the best.
        # The last epoch-end checkpoint is kept, and the resumed run repeats that epoch exactly.
        in_validation = trainer.sanity_checking or trainer.validating
        written = not in_validation and self.write_last(trainer)
        if not trainer.is_global_zero:
            return
        if written:
            print(f"Interrupted at step {trainer.global_step}: {self.last_model_path} holds it")
        elif self.last_model_path and os.path.isfile(self.last_model_path):
            print(f"Interrupted during validation: {self.last_model_path} holds the last epoch")
        else:
            print("Interrupted before the first checkpoint: there is nothing to resume")

    def write_last(self, trainer: L.Trainer) -> bool:
        """Write last.ckpt now (every process takes part); False where it is switched off."""
        if not self.save_last_every_epoch or trainer.fast_dev_run:
            return False
        # set before saving: the path is part of this callback's state in the checkpoint
        self.last_model_path = os.path.join(
            self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION
        )
        trainer.save_checkpoint(self.last_model_path)
        return True


class NonFiniteLossError(UserError, FloatingPointError):
    """Training diverged; raised before any checkpoint holds the broken weights."""


class FiniteLossGuard(L.Callback):
    """Stops training at the first NaN or infinite loss, naming the step, and never lets a
    checkpoint hold broken weights.

    Each step's loss is kept (detached, on its device) and the kept losses are checked together
    every `check_every` steps and before every checkpoint: reading each one as it comes would
    make a GPU wait for each step to finish, and checking each one on its own costs three small
    tensor operations a step (0.1 ms on a CPU).

    Args:
        check_every: Steps between checks of the kept losses.
    """

    def __init__(self, check_every: int = 50) -> None:
        self.check_every = check_every
        self._losses: list[torch.Tensor] = []
        self._first_step = 0  # global step of the first kept loss

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not self._losses:
            self._first_step = trainer.global_step  # steps taken, counting the one of this loss
        self._losses.append(loss.detach())
        if len(self._losses) == self.check_every:
            self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        losses, self._losses = self._losses, []
        if not losses:
            return
        bad = (~torch.isfinite(torch.stack(losses).float())).nonzero()
        if len(bad):
            raise NonFiniteLossError(
                f"training loss became NaN or infinite at step {self._first_step + int(bad[0])} "
                f"(epoch {trainer.current_epoch}); checkpoints written before it are kept. "
                "Lower --model.lr or check the data."
            )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._check(trainer)
        # the last step can break the weights after a finite loss: never save them
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            raise NonFiniteLossError(
                f"weights are not finite at step {trainer.global_step}; checkpoint not written, "
                "earlier ones are kept. Lower --model.lr or check the data."
            )


def in_folder(path: str, folder: str) -> bool:
    """Whether the file `path` lies directly in `folder`, however either is spelled."""
    parent = os.path.dirname(os.path.abspath(path))
    return os.path.isdir(folder) and os.path.samefile(parent, folder)


def cut_short(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether the epoch ended (or will end) before its last batch: a stop by max_time, say."""
    return batch_idx + 1 < trainer.num_training_batches
