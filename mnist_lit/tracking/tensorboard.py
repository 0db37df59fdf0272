"""TensorBoard: the tags of the module's metrics, HParams with real metrics, the Custom Scalars
charts and the run's config as text (the pictures: pictures.py)."""

import os
import re
from typing import Any

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch.utils.tensorboard.summary import hparams

from mnist_lit.data import global_seed

# TensorBoard's tags for the module's metrics (RunLogger writes them). TensorBoard opens on Time
# Series, which groups cards by a tag's first part in name order and expands the first two
# groups: accuracy and loss, training beside validation. Test figures, evaluated-image counts and
# pictures stay under test/ and val/, after them.
TENSORBOARD_TAGS = {
    "train/acc_epoch": "accuracy/train",
    "train/acc_step": "accuracy/train_step",
    "val/acc": "accuracy/val",
    "val/acc_best": "accuracy/val_best",
    "train/loss_epoch": "loss/train",
    "train/loss_step": "loss/train_step",
    "val/loss": "loss/val",
    "train/lr": "lr",
    "test/acc": "test/accuracy",
}


def tensorboard_tag(metric: str) -> str:
    """The TensorBoard tag of a metric the module logs (its own name when not renamed)."""
    return TENSORBOARD_TAGS.get(metric, metric)


# HParams-tab metrics: scalar tags the run logs anyway, so no placeholder values are written.
HPARAM_METRICS = tuple(map(tensorboard_tag, ("val/acc", "val/acc_best", "test/acc", "test/loss")))
# The HParams columns a run's own experiment shows first: what the configs differ in
RECIPE_COLUMNS = ("model/lr", "model/schedule", "model/dropout", "data/batch_size",
                  "trainer/precision", "trainer/max_epochs", "seed")  # fmt: skip
# Set for runs whose parent folder holds the HParams experiment (a sweep's, whose columns are
# what it varies): TensorBoard shows the first experiment it finds, so such runs write none.
SHARED_EXPERIMENT = "MNIST_LIT_SHARED_EXPERIMENT"


def tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def run_hyperparameters(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
    """Model, data, optimizer and trainer settings, flattened to values TensorBoard can show."""
    params = {f"model/{k}": v for k, v in pl_module.hparams.items()}
    if trainer.datamodule is not None:
        params.update({f"data/{k}": v for k, v in trainer.datamodule.hparams.items()})
    params = {k: v for k, v in params.items() if "/_" not in k}  # e.g. Lightning's _instantiator
    for index, optimizer in enumerate(trainer.optimizers):
        params[f"optimizer{index or ''}"] = type(optimizer).__name__
        params[f"optimizer{index or ''}/lr"] = optimizer.defaults.get("lr")
    params["trainer/precision"] = trainer.precision
    params["trainer/max_epochs"] = trainer.max_epochs
    params["trainer/devices"] = trainer.world_size
    params["seed"] = global_seed()
    scalars = (bool, int, float, str)
    return {k: v if isinstance(v, scalars) else str(v) for k, v in params.items() if v is not None}


class HyperparametersWithMetrics(L.Callback):
    """Fills TensorBoard's HParams tab: each training run's settings beside its real val/test
    metrics (the test after fit writes into the same run). `validate`, `test` and `predict`
    runs are not listed: they are not experiments of their own."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = tensorboard(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        params = run_hyperparameters(trainer, pl_module)
        # The metric values are read from the scalar tags of the same names.
        _, start, end = hparams(params, dict.fromkeys(HPARAM_METRICS, 0.0))
        experiment = experiment_summary([k for k in RECIPE_COLUMNS if k in params], list(params))
        writer = logger.experiment._get_file_writer()
        for summary in (
            (start, end) if os.environ.get(SHARED_EXPERIMENT) else (experiment, start, end)
        ):
            writer.add_summary(summary)


# TensorBoard's Custom Scalars tab: the article's two pictures, training and validation in one
# chart each (per-epoch training figures, so that both lines have a point per epoch)
def _tag_pattern(metric: str) -> str:
    return f"^{re.escape(tensorboard_tag(metric))}$"


CURVE_CHARTS = {
    "curves": {
        "loss": ["Multiline", [_tag_pattern("train/loss_epoch"), _tag_pattern("val/loss")]],
        "accuracy": ["Multiline", [_tag_pattern("train/acc_epoch"), _tag_pattern("val/acc")]],
        "learning rate": ["Multiline", [_tag_pattern("train/lr")]],
    }
}


class CurveCharts(L.Callback):
    """Declares the Custom Scalars charts (CURVE_CHARTS) in each training run."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = tensorboard(trainer)
        if logger is not None and trainer.is_global_zero:
            logger.experiment.add_custom_scalars(CURVE_CHARTS)


class SaveConfigToTensorBoard(SaveConfigCallback):
    """Saves config.yaml in the run folder (LightningCLI's default) and shows it as text there."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        logger = tensorboard(trainer)
        if logger is not None:
            config = self.parser.dump(self.config, skip_none=False)
            indented = "\n".join("    " + line for line in config.splitlines())  # markdown code
            logger.experiment.add_text("config", indented, 0)


def experiment_summary(shown: list[str], others: list[str]) -> summary_pb2.Summary:
    """An HParams experiment (TensorBoard's `hparams_config`): the `shown` columns marked as
    differing, which TensorBoard sorts first and ticks, then the `others`, beside the metrics
    that choose and report."""
    infos = [api_pb2.HParamInfo(name=name, differs=True) for name in dict.fromkeys(shown)]
    infos += [api_pb2.HParamInfo(name=name) for name in others if name not in shown]
    experiment = api_pb2.Experiment(
        hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in HPARAM_METRICS],
    )
    summary = summary_pb2.Summary()
    content = plugin_data_pb2.HParamsPluginData(experiment=experiment)
    summary.value.add(
        tag=metadata.EXPERIMENT_TAG,
        metadata=metadata.create_summary_metadata(content),
        tensor=metadata.NULL_TENSOR,
    )
    return summary
