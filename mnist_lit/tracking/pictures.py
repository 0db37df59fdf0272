"""The pictures of validation and test in TensorBoard: digits with their predicted (true) labels,
the most confidently wrong ones, the confusion matrix. Matplotlib without pyplot state, so safe
in any process."""

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torchmetrics.classification import MulticlassConfusionMatrix

from mnist_lit.mnist import IMAGE_SIDE, MEAN, NUM_CLASSES, STD
from mnist_lit.tracking.tensorboard import tensorboard

RIGHT, WRONG = "#1a7f37", "#cf222e"
GAP, LABEL_BAND = 4, 14  # pixels between digits, and above each for its label


def digit_grid(
    images: torch.Tensor,
    preds: torch.Tensor,
    targets: torch.Tensor,
    title: str,
    columns: int = 8,
    confidences: torch.Tensor | None = None,
) -> Figure:
    """Normalised (N, 1, 28, 28) digits titled "pred (true)", green when right, red when wrong.
    One image of all the digits with a label above each: an axes per digit takes eight times
    as long to draw, and the pictures are drawn at every validation."""
    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(columns * 1.1, rows * 1.3 + 0.4), layout="constrained")
    # large type: TensorBoard shows these as cards a third of their size
    figure.suptitle(title, fontsize=18)
    ax = figure.subplots()
    ax.set_axis_off()
    pixels = (images[:, 0].float() * STD + MEAN).clamp(0, 1).cpu().numpy()
    width, height = IMAGE_SIDE + GAP, IMAGE_SIDE + LABEL_BAND  # one cell: a digit, its label
    mosaic = np.zeros((rows * height, columns * width), dtype=np.float32)
    for index, digit in enumerate(pixels):
        top, left = (index // columns) * height + LABEL_BAND, (index % columns) * width
        mosaic[top : top + IMAGE_SIDE, left + GAP // 2 : left + GAP // 2 + IMAGE_SIDE] = digit
        pred, target = int(preds[index]), int(targets[index])
        label = f"{pred} ({target})"
        if confidences is not None:
            label += f" {confidences[index]:.0%}"
        color = RIGHT if pred == target else WRONG
        ax.text(left + width / 2, top - 1.5, label, ha="center", va="bottom", fontsize=13,
                color=color)  # fmt: skip
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    return figure


def confusion_figure(counts: torch.Tensor, title: str) -> Figure:
    """Row-normalised confusion matrix: the diagonal is each digit's accuracy (recall)."""
    counts = counts.float().cpu()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    # fixed places for the matrix and its colour bar: the content never changes shape, and a
    # layout engine would add half the drawing time at every validation
    figure = Figure(figsize=(6.4, 5.6))
    ax = figure.add_axes((0.1, 0.1, 0.72, 0.8))
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    colorbar = figure.colorbar(image, cax=figure.add_axes((0.84, 0.1, 0.03, 0.8)))
    colorbar.set_label("fraction of the true digit")
    for true, pred in torch.nonzero(counts).tolist():
        rate = rates[true, pred].item()
        text = f"{rate:.1%}" if true == pred else str(int(counts[true, pred]))
        color = "white" if rate > 0.5 else "black"
        ax.text(pred, true, text, ha="center", va="center", fontsize=8, color=color)
    ax.set(xticks=range(NUM_CLASSES), yticks=range(NUM_CLASSES))
    ax.tick_params(labelsize=12)
    ax.set_xlabel("predicted", fontsize=13)
    ax.set_ylabel("true", fontsize=13)
    ax.set_title(title, fontsize=16)
    return figure


class PredictionPictures(L.Callback):
    """At the end of validation and test: the first digits with predicted (true) labels, the most
    confidently wrong ones, and the confusion matrix, as TensorBoard images.

    Args:
        grid_size: How many digits each grid shows.
    """

    def __init__(self, grid_size: int = 32) -> None:
        self.grid_size = grid_size
        self.confusion = MulticlassConfusionMatrix(NUM_CLASSES)

    def _reset(self) -> None:
        self.confusion.reset()
        self.first: list[torch.Tensor] = []  # images, preds, targets, confidences of the first
        self.worst: list[torch.Tensor] = []  # ...and of the highest-loss mistakes, plus losses

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._collect(outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._collect(outputs, batch)

    def _collect(self, logits: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        logits, (images, targets) = logits.detach().float().cpu(), (t.cpu() for t in batch)
        self.confusion.update(logits, targets)
        confidences, preds = logits.softmax(dim=1).max(dim=1)
        if not self.first or len(self.first[0]) < self.grid_size:
            batch_rows = [images, preds, targets, confidences]
            self.first = batch_rows if not self.first else self._cat(self.first, batch_rows)
            self.first = [t[: self.grid_size] for t in self.first]
        wrong = preds != targets
        losses = F.cross_entropy(logits, targets, reduction="none")
        rows = [t[wrong] for t in (images, preds, targets, confidences, losses)]
        pool = self._cat(self.worst, rows) if self.worst else rows
        keep = pool[4].topk(min(self.grid_size, len(pool[4]))).indices
        self.worst = [t[keep] for t in pool]

    @staticmethod
    def _cat(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.cat([x, y]) for x, y in zip(a, b)]

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._log(trainer, "test")

    def _log(self, trainer: L.Trainer, stage: str) -> None:
        counts = self.confusion.compute()  # every process takes part: the counts are synchronised
        logger = tensorboard(trainer)
        if logger is None or not trainer.is_global_zero or not self.first:
            return
        step, writer = trainer.global_step, logger.experiment
        images, preds, targets, conf = self.first
        title = f"{stage}: predicted (true)"  # the card says the step
        writer.add_figure(f"{stage}/predictions", digit_grid(images, preds, targets, title), step)
        if self.worst and len(self.worst[0]):
            images, preds, targets, conf, _ = self.worst
            title = f"{stage}: worst mistakes, predicted (true) confidence"
            figure = digit_grid(images, preds, targets, title, confidences=conf)
            writer.add_figure(f"{stage}/worst_mistakes", figure, step)
        accuracy = counts.diag().sum() / counts.sum()
        title = f"{stage}: accuracy {accuracy:.2%}"
        writer.add_figure(f"{stage}/confusion_matrix", confusion_figure(counts, title), step)
