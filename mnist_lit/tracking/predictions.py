"""`predictions.csv`: one row per predict input, in input order, written whole or not at all."""

import csv
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lit.errors import UserError
from mnist_lit.images import PredictInputs
from mnist_lit.mnist import NUM_CLASSES
from mnist_lit.tracking.folders import check_writable
from mnist_lit.tracking.runs import run_folder


class PredictionOutputError(UserError, FileExistsError):
    """The predictions file cannot be written: it exists (and no --overwrite), or writing failed."""


class PredictionWriter(BasePredictionWriter):
    """Writes one CSV row per predict input, in input order: `path,label,confidence,p0..p9,error`.
    Inputs that could not be read keep their row, with the reason under `error`. The inputs are
    the data module's `predict_inputs` (images.PredictInputs).

    Args:
        output: The CSV to write; by default predictions.csv in the log folder (`predict/` in the
            run folder of the checkpoint that predicts), or predictions_2.csv, _3... when taken.
        overwrite: Replace an existing `output` (or the default predictions.csv); otherwise an
            existing `output` is refused before any work.
    """

    def __init__(self, output: Path | None = None, overwrite: bool = False) -> None:
        super().__init__(write_interval="epoch")
        self.output, self.overwrite = output, overwrite
        self.written = False
        self.summary = ""  # what was written, said once the predict loop (and its bar) ended

    def check_output(self) -> None:
        """Refuse an output that could not be written, before the work rather than after it."""
        if self.output is None:
            return
        if self.output.is_dir():
            raise PredictionOutputError(f"--predictions_file {self.output} is a folder, not a file")
        if self.output.exists() and not self.overwrite:
            raise PredictionOutputError(
                f"{self.output} exists; pass --overwrite true or another --predictions_file"
            )
        check_writable(self.output.parent, "--predictions_file")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.written, self.summary = False, ""

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dl_idx)
        # Lightning stops fit, validate and test on SIGTERM but would predict on and exit 0
        if trainer.received_sigterm:
            raise SIGTERMException

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        inputs: PredictInputs = trainer.datamodule.predict_inputs
        probs = torch.cat([batch["probs"] for batch in predictions]).float().cpu()
        indices = torch.tensor([i for batch in batch_indices[0] for i in batch], dtype=torch.long)
        positions = inputs.positions[indices]
        if trainer.world_size > 1:  # each process predicted its own share: rank 0 writes them all
            shares = [None] * trainer.world_size
            torch.distributed.all_gather_object(shares, (positions, probs))
            positions = torch.cat([share[0] for share in shares])
            probs = torch.cat([share[1] for share in shares])
        self.write(trainer, positions, probs)

    def write(
        self,
        trainer: L.Trainer,
        positions: torch.Tensor | None = None,
        probs: torch.Tensor | None = None,
    ) -> None:
        """Rows for every input: predicted ones from `probs`, unreadable ones with their error
        (all of them when nothing was predicted)."""
        inputs: PredictInputs = trainer.datamodule.predict_inputs
        # run_folder is collective: every rank
        path = self.output or free_name(run_folder(trainer) / "predictions.csv", self.overwrite)
        self.written = True
        if trainer.is_global_zero:
            self.check_output()
            rows = {} if probs is None else dict(zip(positions.tolist(), probs.tolist()))
            write_atomically(path, csv_rows(inputs.names, rows, inputs.errors))
            failed = len(inputs.errors)
            self.summary = (
                f"Predicted {len(rows)} images ({failed} could not be read); wrote {path}"
            )


def free_name(path: Path, overwrite: bool) -> Path:
    """`path`, or the first of path_2, path_3... not taken: an earlier predict's file is kept."""
    if overwrite or not path.exists():
        return path
    number = 2
    while path.with_stem(f"{path.stem}_{number}").exists():
        number += 1
    return path.with_stem(f"{path.stem}_{number}")


def csv_rows(inputs: list[str], probs: dict[int, list[float]], errors: dict[int, str]):
    yield ["path", "label", "confidence", *(f"p{k}" for k in range(NUM_CLASSES)), "error"]
    for position, name in enumerate(inputs):
        if position in errors:
            yield [name, "", "", *[""] * NUM_CLASSES, errors[position]]
            continue
        p = probs[position]
        label = max(range(len(p)), key=p.__getitem__)
        yield [name, label, f"{p[label]:.6f}", *(f"{x:.6f}" for x in p), ""]


def write_atomically(path: Path, rows) -> None:
    """Write a CSV beside its final name, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", newline="", encoding="utf-8") as file:
            csv.writer(file).writerows(rows)
        partial.replace(path)
    except OSError as error:  # e.g. a full disk: one line, and no half-written file left
        partial.unlink(missing_ok=True)
        raise PredictionOutputError(f"could not write {path}: {error.strerror or error}") from None
