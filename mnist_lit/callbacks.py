"""Callbacks that leave a run's results in its log folder: metrics.json and predictions.csv."""

import csv
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


def _as_number(value: Any) -> Any:
    return value.item() if isinstance(value, torch.Tensor) else value


def run_folder(trainer: L.Trainer) -> Path:
    """The run's log folder. Under DDP, `trainer.log_dir` is a broadcast from rank 0, so every
    process must ask for it, not only the one that writes."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


class RunSummary(L.Callback):
    """Writes `metrics.json` in the run's log folder: final figures, best checkpoint, throughput.

    Training time counts the training batches only: validation inside an epoch is left out.
    """

    def __init__(self, filename: str = "metrics.json") -> None:
        self.filename = filename

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_seconds, self.train_images = 0.0, 0
        self._started = time.perf_counter()  # a resumed run may start inside an epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_images += len(batch[0]) * trainer.world_size

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.training:  # pause the training clock while validating mid-fit
            self.train_seconds += time.perf_counter() - self._started

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.training:
            self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_seconds += time.perf_counter() - self._started
        self._started = time.perf_counter()  # validation may still follow this hook

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        seconds = self.train_seconds
        self._write(
            trainer,
            {
                "val/acc": _as_number(trainer.callback_metrics.get("val/acc")),
                "best_val/acc": _as_number(getattr(checkpoint, "best_model_score", None)),
                "best_checkpoint": _absolute(getattr(checkpoint, "best_model_path", None)),
                "epochs": trainer.current_epoch,
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
        path = run_folder(trainer) / self.filename  # every process: this is a collective call
        if not trainer.is_global_zero:
            return
        summary = json.loads(path.read_text()) if path.is_file() else {}
        summary.update(figures)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n")


class NonFiniteLossError(FloatingPointError):
    """Training diverged; raised before any checkpoint holds the broken weights."""


class FiniteLossGuard(L.Callback):
    """Stops training at the first NaN or infinite loss, naming the step, and never lets a
    checkpoint hold broken weights.

    Each step's finiteness is recorded on the device and read back every `check_every` steps and
    before every checkpoint: reading it every step would make a GPU wait for each step to finish.

    Args:
        check_every: Steps between reads of the recorded flags.
    """

    def __init__(self, check_every: int = 50) -> None:
        self.check_every = check_every
        self._flags: torch.Tensor | None = None  # True where the loss was not finite
        self._first_step = 0  # global step of flag 0
        self._recorded = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if self._flags is None or self._flags.device != loss.device:
            self._flags = torch.zeros(self.check_every, dtype=torch.bool, device=loss.device)
        if self._recorded == 0:
            self._first_step = trainer.global_step  # steps taken, counting the one of this loss
        self._flags[self._recorded] = ~torch.isfinite(loss.detach())
        self._recorded += 1
        if self._recorded == self.check_every:
            self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        recorded, self._recorded = self._recorded, 0
        if self._flags is None or recorded == 0:
            return
        bad = self._flags[:recorded].nonzero()
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


class PredictionOutputError(FileExistsError):
    """The predictions file exists and --overwrite was not given."""


class PredictionWriter(BasePredictionWriter):
    """Writes one CSV row per predict input, in input order: `path,label,confidence,p0..p9,error`.
    Inputs that could not be read keep their row, with the reason under `error`.

    `output` defaults to predictions.csv in the run's log folder; set by the CLI's
    --predictions_file, it is never overwritten unless `overwrite` is set.
    """

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        self.output: Path | None = None
        self.overwrite = False

    def check_output(self) -> None:
        if self.output is not None and self.output.exists() and not self.overwrite:
            raise PredictionOutputError(
                f"{self.output} exists; pass --overwrite true or another --predictions_file"
            )

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        data = trainer.datamodule
        probs = torch.cat([batch["probs"] for batch in predictions]).float().cpu()
        indices = torch.tensor([i for batch in batch_indices[0] for i in batch], dtype=torch.long)
        positions = data.predict_set.labels[indices]
        if trainer.world_size > 1:  # each process predicted its own share: rank 0 writes them all
            shares = [None] * trainer.world_size
            torch.distributed.all_gather_object(shares, (positions, probs))
            positions = torch.cat([share[0] for share in shares])
            probs = torch.cat([share[1] for share in shares])
        self.write(trainer, positions, probs)

    def write(self, trainer: L.Trainer, positions: torch.Tensor, probs: torch.Tensor) -> None:
        """Rows for every input: predicted ones from `probs`, unreadable ones with their error."""
        data = trainer.datamodule
        path = self.output or run_folder(trainer) / "predictions.csv"  # collective: every rank
        if trainer.is_global_zero:
            self.check_output()
            rows = dict(zip(positions.tolist(), probs.tolist()))
            write_atomically(path, csv_rows(data.predict_inputs, rows, data.predict_errors))
            failed = len(data.predict_errors)
            print(f"Predicted {len(rows)} images ({failed} could not be read); wrote {path}")


def csv_rows(inputs: list[str], probs: dict[int, list[float]], errors: dict[int, str]):
    yield ["path", "label", "confidence", *(f"p{k}" for k in range(10)), "error"]
    for position, name in enumerate(inputs):
        if position in errors:
            yield [name, "", "", *[""] * 10, errors[position]]
            continue
        p = probs[position]
        label = max(range(len(p)), key=p.__getitem__)
        yield [name, label, f"{p[label]:.6f}", *(f"{x:.6f}" for x in p), ""]


def write_atomically(path: Path, rows) -> None:
    """Write a CSV beside its final name, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    partial.replace(path)
