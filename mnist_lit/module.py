"""The LightningModule: cross-entropy training of the CNN with Adam, accuracy per stage."""

import math
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import OneCycleLR
from torchmetrics import MaxMetric, MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_lit.augment import shift_by_pixels
from mnist_lit.errors import ConfigError, require
from mnist_lit.mnist import IMAGE_SIDE, NUM_CLASSES
from mnist_lit.model import CNN

# Evaluation and prediction on a CPU run the network on at most this many images at a time: at
# batch 1024 the first layer's output (25 MB) spills out of the caches, and fp32 inference falls
# from about 9,000 to 5,500 images/s (benchmarks/ingredients.py). Each image's result is the same.
CPU_EVAL_CHUNK = 256
# `test --tta`: each test image as it is and moved one pixel up, down, left and right (down, right)
TTA_SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def per_image(batch_mean: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The batch's mean loss once per image (a view), so a MeanMetric weighs batches by size.
    (MeanMetric's `weight` argument is ignored with nan_strategy="disable" in torchmetrics 1.9.)"""
    return batch_mean.expand(len(labels))


def check_model_arguments(
    channels: tuple[int, int, int], hidden: int, dropout: float, lr: float
) -> None:
    """Values that cannot learn fail here, naming the flag, not as a silent 10% run."""
    widths = list(channels)
    require(len(widths) == 3 and min(widths) >= 1, "model.channels", widths, "3 positive widths")
    require(hidden >= 1, "model.hidden", hidden, "a positive width")
    require(0 <= dropout < 1, "model.dropout", dropout, "in [0, 1)")
    require(math.isfinite(lr) and lr > 0, "model.lr", lr, "a finite positive number")


class MNISTClassifier(L.LightningModule):
    """Classifies 28x28 digits with the article's CNN.

    Args:
        channels: Output channels of the three convolution blocks.
        hidden: Width of the fully connected hidden layer.
        dropout: Dropout probability used throughout the network.
        lr: Adam learning rate; with the one-cycle schedule, its peak.
        schedule: `constant` keeps `lr` throughout (the article); `one_cycle` warms up to `lr`
            over the first quarter of training, then anneals to almost zero, stepping per batch.
        channels_last: Keep activations in NHWC layout, which the CPU (oneDNN) and GPU (cuDNN)
            convolutions run fastest in; the same weights, results equal up to rounding.
        batch_norm: Batch normalisation after each convolution: not the article's network, so
            off by default (under DDP, add --trainer.sync_batchnorm true for exact statistics).
    """

    def __init__(
        self,
        channels: tuple[int, int, int] = (32, 64, 128),
        hidden: int = 625,
        dropout: float = 0.3,
        lr: float = 1e-3,
        schedule: Literal["constant", "one_cycle"] = "constant",
        channels_last: bool = True,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_model_arguments(channels, hidden, dropout, lr)
        self.model = CNN(channels=channels, hidden=hidden, dropout=dropout, batch_norm=batch_norm)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

        # One metric object per stage: sharing one would mix their running counts.
        # average="micro" is the fraction of images right (the class default is a per-class mean).
        # Argument checks and NaN scans are off: each reads a value back from the GPU every step
        # (labels come from our own data; non-finite losses are FiniteLossGuard's job).
        def accuracy() -> MulticlassAccuracy:
            return MulticlassAccuracy(NUM_CLASSES, average="micro", validate_args=False)

        self.train_acc, self.val_acc, self.test_acc = accuracy(), accuracy(), accuracy()
        # Losses and image counts are metric objects too, so that under DDP each image counts
        # once with its own weight, not as a mean of per-process means.
        self.train_loss, self.val_loss, self.test_loss = (
            MeanMetric(nan_strategy="disable") for _ in range(3)
        )
        self.val_images, self.test_images = SumMetric(), SumMetric()
        self.val_acc_best = MaxMetric()
        self.resumed_best: torch.Tensor | None = None
        # set by `test --tta` for one evaluation; never a hyperparameter of the trained model
        self.test_time_augmentation = False
        # lets Lightning print layer shapes and TensorBoard draw the graph (logger log_graph)
        self.example_input_array = torch.zeros(1, 1, IMAGE_SIDE, IMAGE_SIDE)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.training or images.device.type != "cpu" or len(images) <= CPU_EVAL_CHUNK:
            return self.model(images)
        return torch.cat([self.model(chunk) for chunk in images.split(CPU_EVAL_CHUNK)])

    def _logits_and_loss(
        self, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch[0])
        return logits, F.cross_entropy(logits, batch[1])

    def _averaged_over_shifts(
        self, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Test-time augmentation: the probabilities averaged over TTA_SHIFTS, returned as log
        probabilities (logits of the averaged distribution) with their cross-entropy."""
        images, labels = batch
        copies = [shift_by_pixels(images, down, right) for down, right in TTA_SHIFTS]
        probs = torch.stack([self(copy).softmax(dim=1) for copy in copies]).mean(dim=0)
        log_probs = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
        return log_probs, F.nll_loss(log_probs, labels)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        labels = batch[1]
        logits, loss = self._logits_and_loss(batch)
        # The epoch figures accumulate on the device and are read once, at the epoch's end.
        self.train_acc.update(logits, labels)
        self.train_loss.update(per_image(loss.detach(), labels))
        if self._logger_writes_this_step():
            # Each self.log costs Lightning ~0.7 ms of Python (a quarter of a CPU step at batch
            # 32 for five of them), so the per-step curves are handed over only on the steps its
            # logger writes. They are this batch's plain figures.
            batch_acc = (logits.argmax(dim=1) == labels).float().mean()
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
            self.log("train/acc_step", batch_acc, on_step=True, on_epoch=False)
            self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True)
        return loss

    def _logger_writes_this_step(self) -> bool:
        """Lightning's rule: the logger writes after every `log_every_n_steps`-th step."""
        every = self.trainer.log_every_n_steps
        return every > 0 and (self.global_step + 1) % every == 0

    def on_train_epoch_end(self) -> None:
        # compute() synchronises the processes under DDP: each image counts once, and every
        # process holds the same figure (sync_dist only spares Lightning's warning)
        self.log("train/loss_epoch", self.train_loss.compute(), sync_dist=True)
        self.log("train/acc_epoch", self.train_acc.compute(), sync_dist=True)
        self.train_loss.reset()
        self.train_acc.reset()

    def _evaluation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], stage: str
    ) -> torch.Tensor:
        labels = batch[1]
        averaged = stage == "test" and self.test_time_augmentation
        logits, loss = (self._averaged_over_shifts if averaged else self._logits_and_loss)(batch)
        getattr(self, f"{stage}_acc").update(logits, labels)
        getattr(self, f"{stage}_loss").update(per_image(loss, labels))
        getattr(self, f"{stage}_images").update(len(labels))
        return logits  # for the prediction pictures

    def _log_evaluation(self, stage: str) -> None:
        # once per evaluation: Lightning computes (and under DDP synchronises) each metric
        for name in ("loss", "acc", "images"):
            metric = getattr(self, f"{stage}_{name}")
            self.log(f"{stage}/{name}", metric, prog_bar=name == "acc")

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        return self._evaluation_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluation_step(batch, "test")

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # forget the sanity-check batches
        if self.resumed_best is not None:  # a resumed run's best covers the epochs before
            self.val_acc_best.update(self.resumed_best)
        scheduler, steps = self.lr_schedulers(), self.trainer.estimated_stepping_batches
        if isinstance(scheduler, OneCycleLR) and scheduler.total_steps != steps:
            # a resumed one-cycle plan: torch would fail once its last step is passed
            raise ConfigError(
                f"--ckpt_path {self.trainer.ckpt_path}: its one-cycle schedule was planned for "
                f"{scheduler.total_steps} steps and this run takes {steps} (its epochs or batches "
                "changed); a one-cycle rate cannot be stretched. Resume with the run's own "
                "settings, or start a new run"
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.val_acc_best.update_called:
            checkpoint["val_acc_best"] = self.val_acc_best.compute().item()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        best = checkpoint.get("val_acc_best")
        self.resumed_best = None if best is None else torch.tensor(best)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")
        self.val_acc_best(self.val_acc.compute())
        # val_acc is already synchronised, so every process holds the same best value
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def predict_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        probs = self(batch[0]).softmax(dim=1)
        return {"preds": probs.argmax(dim=1), "probs": probs}

    def configure_optimizers(self) -> torch.optim.Optimizer | dict:
        # One fused kernel updates all weights: 0.6 ms a step on CPU against 4.7 ms for the
        # default per-tensor loop. Other devices keep the default.
        fused = self.device.type in ("cpu", "cuda")
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, fused=fused)
        if self.hparams.schedule == "constant":
            return optimizer
        scheduler = one_cycle(optimizer, self.hparams.lr, self.trainer.estimated_stepping_batches)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def one_cycle(
    optimizer: torch.optim.Optimizer, peak_lr: float, total_steps: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    """Warm up over the first quarter of the steps, then cosine-anneal to peak_lr / 1e4 (Adam's
    beta1 moves opposite to the rate, 0.95 -> 0.85 -> 0.95, as the schedule prescribes)."""
    # torch divides by (warm-up steps - 1), zero when a quarter of the steps is exactly one
    pct_start = 0.25 if int(total_steps) != 4 else 0.375
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peak_lr, total_steps=int(total_steps), pct_start=pct_start
    )
