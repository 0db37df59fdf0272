"""A quiet console: what Lightning prints that a user cannot act on is left out, and the model
summary lists the network, not the metric objects beside it. Real problems are still shown."""

import logging
import threading
import warnings

import lightning as L
import torchmetrics
from lightning.pytorch.callbacks import ModelSummary, ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE
from lightning.pytorch.utilities.model_summary import ModelSummary as LayerTable
from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
from torch import nn

# Lightning's info lines (logger lightning.pytorch.utilities.rank_zero and the checkpoint
# connector's) that carry nothing for this project's users
NOISE = (
    "💡 Tip:",  # advertising for Lightning's cloud services
    "GPU available: False",  # said on every run of a machine without one
    "TPU available:",
    "HPU available:",
    "Trainer already configured with model summary callbacks",  # NetworkSummary below
    "`weights_only` was not set",  # checkpoints are checked with weights_only=True first
)
WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)",  # raised inside Lightning with recent torch
    r"(?s)\s*By default only one JsonargparseDeprecationWarning",
    # about fit-only callbacks when evaluating a checkpoint
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint",
    # mixed precision keeps fp32 weights, so the summary's 32-bit size is the right one
    r"Precision \S+-mixed is not supported by the model summary",
)


class DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(noise) for noise in NOISE)


def quiet_lightning() -> None:
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.trainer.connectors.checkpoint_connector",
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNoise) for f in logger.filters):
            logger.addFilter(DropNoise())
    for message in WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    quiet_event_writer_thread()


def quiet_event_writer_thread() -> None:
    """TensorBoard's event writer thread prints the traceback of a failed write (a full disk)
    and keeps the error, which the logger's next write raises again in the run's own thread,
    where folders.reporting_full_disk turns it into one line: the thread's copy is left out."""
    if getattr(threading.excepthook, "quiet_event_writer", False):
        return
    default = threading.excepthook

    def excepthook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.thread, _AsyncWriterThread) and args.exc_type is not None
                and issubclass(args.exc_type, OSError)):  # fmt: skip
            default(args)

    excepthook.quiet_event_writer = True
    threading.excepthook = excepthook


class NetworkLayers(LayerTable):
    """Lightning's summary without the torchmetrics objects, which have no parameters and no
    sizes: nine rows of `0 | ? | ?` under the network's one."""

    @property
    def named_modules(self) -> list[tuple[str, nn.Module]]:
        return [
            (name, module)
            for name, module in super().named_modules
            if not isinstance(module, torchmetrics.Metric)
        ]


class NetworkLayersPrinted(ModelSummary):
    """The model summary printed when fit starts (`--trainer.enable_model_summary false` turns it
    off), listing the network's layers only."""

    def _summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> LayerTable:
        return NetworkLayers(pl_module, max_depth=self._max_depth)


class WithoutVersion:
    """A progress bar without Lightning's `v_num`: the bar formats the run's number as a figure
    ("v_num: 0.000"), and the run's folder is named in full when the command ends."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class RunRichProgressBar(WithoutVersion, RichProgressBar):
    pass


class RunTQDMProgressBar(WithoutVersion, TQDMProgressBar):
    pass


def run_progress_bar() -> ProgressBar:
    """The bar Lightning would choose (Rich where it is installed), without `v_num`."""
    return RunRichProgressBar() if _RICH_AVAILABLE else RunTQDMProgressBar()
