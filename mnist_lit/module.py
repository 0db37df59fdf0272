"""The LightningModule: cross-entropy training of the CNN with Adam, accuracy per stage."""

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_lit.model import CNN, IMAGE_SIZE, NUM_CLASSES


class MNISTClassifier(L.LightningModule):
    """Classifies 28x28 digits with the article's CNN.

    Args:
        channels: Output channels of the three convolution blocks.
        hidden: Width of the fully connected hidden layer.
        dropout: Dropout probability used throughout the network.
        lr: Adam learning rate.
    """

    def __init__(
        self,
        channels: tuple[int, int, int] = (32, 64, 128),
        hidden: int = 625,
        dropout: float = 0.3,
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = CNN(channels=channels, hidden=hidden, dropout=dropout)
        # One metric object per stage: sharing one would mix their running counts.
        # average="micro" is the fraction of images right (the class default is a per-class mean).
        self.train_acc = MulticlassAccuracy(NUM_CLASSES, average="micro")
        self.val_acc = MulticlassAccuracy(NUM_CLASSES, average="micro")
        self.test_acc = MulticlassAccuracy(NUM_CLASSES, average="micro")
        # Losses and image counts are metric objects too, so that under DDP each image counts
        # once with its own weight, not as a mean of per-process means.
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_images, self.test_images = SumMetric(), SumMetric()
        self.val_acc_best = MaxMetric()
        # lets Lightning print layer shapes and TensorBoard draw the graph (logger log_graph)
        self.example_input_array = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _shared_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        accuracy = getattr(self, f"{stage}_acc")
        if stage == "train":
            # Per-step curves take this batch's plain figures; a metric's forward() would cost
            # ~10% of a step here. The epoch figures accumulate in the metric objects.
            batch_acc = (logits.argmax(dim=1) == labels).float().mean()
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
            self.log("train/acc_step", batch_acc, on_step=True, on_epoch=False)
            accuracy.update(logits, labels)
            self.train_loss.update(loss.detach(), weight=len(labels))
            self.log("train/loss_epoch", self.train_loss, on_step=False, on_epoch=True)
            self.log("train/acc_epoch", accuracy, on_step=False, on_epoch=True)
            return loss, logits
        accuracy.update(logits, labels)
        getattr(self, f"{stage}_loss").update(loss, weight=len(labels))
        getattr(self, f"{stage}_images").update(len(labels))
        for name in ("loss", "acc", "images"):
            metric = getattr(self, f"{stage}_{name}")
            self.log(f"{stage}/{name}", metric, on_epoch=True, prog_bar=name == "acc")
        return loss, logits

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return self._shared_step(batch, "train")[0]

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        return self._shared_step(batch, "val")[1]  # logits, for the prediction pictures

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")[1]

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # forget the sanity-check batches

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        # val_acc is already synchronised, so every process holds the same best value
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def predict_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        probs = self(batch[0]).softmax(dim=1)
        return {"preds": probs.argmax(dim=1), "probs": probs}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
