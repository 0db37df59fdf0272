"""`metrics.json` in the run's folder, written and read here alone: final and best figures, the
checkpoints they came from, throughput. Its keys are the module's metric names (`val/acc`,
`val/acc_best`, `test/acc`, `test/loss`) and the training counts."""

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from mnist_lit.tracking.runs import metrics_path, run_folder


def _as_number(value: Any) -> Any:
    return value.item() if isinstance(value, torch.Tensor) else value


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


# keys of files written by earlier versions, and of sweep records stored by them
FORMER_KEYS = {
    "best_val/acc": "val/acc_best",
    "val_acc_best": "val/acc_best",
    "test_acc": "test/acc",
}


def normalize(figures: dict[str, Any]) -> dict[str, Any]:
    """Figures under today's names, whatever version wrote them."""
    return {FORMER_KEYS.get(key, key): value for key, value in figures.items()}


def read_metrics(run: Path) -> dict[str, Any]:
    """A run's metrics.json; empty when there is none, or it is damaged (cut short by a full
    disk, say): the figures are then not known."""
    try:
        figures = json.loads(metrics_path(run).read_text())
    except (OSError, ValueError):
        return {}
    return normalize(figures) if isinstance(figures, dict) else {}


class MetricsFile(L.Callback):
    """Writes `metrics.json` in the run's log folder: final figures, best checkpoint, throughput.

    Training time counts the training batches only: validation inside an epoch is left out.
    The counts travel in checkpoints, so a resumed run's figures cover the whole run.
    """

    def __init__(self) -> None:
        self.reset()

    @property
    def state_key(self) -> str:
        return "RunSummary"  # its name in the checkpoints of earlier versions, which still resume

    def reset(self) -> None:
        self.train_seconds, self.train_images, self.epochs = 0.0, 0, 0
        self.batch_idx, self.stopped_mid_epoch = -1, False
        self.resumes = 0  # times the run stopped (SIGTERM, Ctrl-C, a requeue) and continued

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # before a resumed run's checkpoint restores the counts
            self.reset()

    def state_dict(self) -> dict[str, Any]:
        return {"train_seconds": self.train_seconds, "train_images": self.train_images,
                "epochs": self.epochs, "resumes": self.resumes}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_seconds = state_dict["train_seconds"]
        self.train_images = state_dict["train_images"]
        self.epochs = state_dict.get("epochs", 0)
        self.resumes = state_dict.get("resumes", 0) + 1  # restored: this fit continues a run

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()  # a resumed run may start inside an epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_images += len(batch[0]) * trainer.world_size
        self.batch_idx = batch_idx

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.training:  # pause the training clock while validating mid-fit
            self.train_seconds += time.perf_counter() - self._started

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.training:
            self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_seconds += time.perf_counter() - self._started
        self.stopped_mid_epoch = self.batch_idx + 1 < trainer.num_training_batches
        self.epochs += not self.stopped_mid_epoch
        self._started = time.perf_counter()  # validation may still follow this hook

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        seconds = self.train_seconds
        self._write(
            trainer,
            {
                "val/acc": _as_number(trainer.callback_metrics.get("val/acc")),
                "val/acc_best": _as_number(getattr(checkpoint, "best_model_score", None)),
                "best_checkpoint": _absolute(getattr(checkpoint, "best_model_path", None)),
                "epochs": self.epochs,  # complete ones
                "global_step": trainer.global_step,
                "stopped_mid_epoch": self.stopped_mid_epoch,  # e.g. by --trainer.max_time
                "resumes": self.resumes,
                "train_images": self.train_images,
                "train_seconds": round(seconds, 2),
                "train_images_per_second": round(self.train_images / seconds, 1)
                if seconds
                else None,
            },
        )

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        self._write(
            trainer,
            {
                "test/acc": _as_number(metrics.get("test/acc")),
                "test/loss": _as_number(metrics.get("test/loss")),
                "test_checkpoint": _absolute(trainer.ckpt_path),
            },
        )

    def _write(self, trainer: L.Trainer, figures: dict[str, Any]) -> None:
        if trainer.fast_dev_run:  # a smoke test of the code, not a run to keep
            return
        run = run_folder(trainer)  # every process: this is a collective call
        if not trainer.is_global_zero:
            return
        written = read_metrics(run) | figures
        run.mkdir(parents=True, exist_ok=True)
        metrics_path(run).write_text(json.dumps(written, indent=2) + "\n")
