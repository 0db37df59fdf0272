"""Lightning's Trainer with what every `mnist-lit` run does around `fit` and `predict`, and the
logger and callbacks every run gets.

LightningCLI turns each Trainer method's arguments into its subcommand's flags, so
`--test_after_fit` belongs to `fit` alone and `--predictions_file`/`--overwrite` to `predict`.
"""

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities import rank_zero_warn

from mnist_lit.errors import ConfigError
from mnist_lit.module import MNISTClassifier
from mnist_lit.tracking.folders import check_run_folders, reporting_full_disk
from mnist_lit.tracking.metrics_file import MetricsFile
from mnist_lit.tracking.pictures import PredictionPictures
from mnist_lit.tracking.predictions import PredictionWriter
from mnist_lit.tracking.runs import EVENTS, no_empty_run_left, run_folder
from mnist_lit.tracking.tensorboard import CurveCharts, HyperparametersWithMetrics, tensorboard
from mnist_lit.training.checkpoint_io import write_atomically
from mnist_lit.training.checkpointing import BestAndLastCheckpoint, FiniteLossGuard
from mnist_lit.training.console import NetworkLayersPrinted, run_progress_bar
from mnist_lit.training.interrupts import CtrlCStops, SigtermStopsTogether
from mnist_lit.training.random_states import RandomStatesInCheckpoint


def trainer_defaults(callbacks: list | None = None) -> dict:
    """The logger and the callbacks every run gets, on top of any given in configs or flags;
    `callbacks` are added to them (tests, benchmarks)."""
    return {
        "max_epochs": 15,  # the article's recipe, rather than Lightning's 1000
        "logger": {
            "class_path": "mnist_lit.tracking.runs.RunLogger",
            # the HParams tab gets real metrics (see tensorboard.py), not an hp_metric of -1
            "init_args": {"default_hp_metric": False},
        },
        "callbacks": [
            MetricsFile(),
            PredictionWriter(),
            PredictionPictures(),
            HyperparametersWithMetrics(),
            CurveCharts(),
            RandomStatesInCheckpoint(),
            FiniteLossGuard(),
            CtrlCStops(),
            SigtermStopsTogether(),
            *(callbacks or []),
        ],
    }


def console_and_checkpoints(settings: dict) -> list[L.Callback]:
    """The trainer's callbacks, completed: the network summary and the progress bar unless
    switched off or the user chose their own, and no best/last checkpoint when checkpointing is
    off (Lightning refuses one then)."""
    callbacks = settings.get("callbacks") or []
    callbacks = [callbacks] if isinstance(callbacks, L.Callback) else list(callbacks)
    if settings.get("enable_checkpointing") is False:
        callbacks = [c for c in callbacks if not isinstance(c, BestAndLastCheckpoint)]
    if settings.get("enable_model_summary") is not False:
        callbacks.append(NetworkLayersPrinted(max_depth=2))  # Lightning's lists metrics too
    chosen = any(isinstance(c, ProgressBar) for c in callbacks)
    if settings.get("enable_progress_bar") is not False and not chosen:
        callbacks.append(run_progress_bar())
    return callbacks


class MNISTTrainer(L.Trainer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's Trainer, whose every argument is a --trainer flag"""
        kwargs["callbacks"] = console_and_checkpoints(kwargs)
        super().__init__(*args, **kwargs)
        check_cluster(self)
        write_atomically(self)  # an interrupted checkpoint write never costs the previous one

    def fit(self, *args: Any, test_after_fit: bool = True, **kwargs: Any) -> None:
        """Fit the model, then test its best checkpoint.

        Args:
            test_after_fit: After fitting, test the best checkpoint on the official test set.
        """
        if self.max_epochs == 0:  # Lightning would test untrained weights under a warning
            raise ConfigError(
                "--trainer.max_epochs 0 trains nothing; to evaluate untrained weights on purpose, "
                "run `test --untrained true`"
            )
        check_run_folders(self)
        fix = "free some space there or choose another folder with --trainer.default_root_dir"
        with reporting_full_disk(self, fix), no_empty_run_left(self):
            super().fit(*args, **kwargs)
            if self.fast_dev_run:
                return
            if test_after_fit:
                self.test_best()
        self.print_results()

    def test_best(self) -> None:
        """Test the best checkpoint of the fit just done, or its final weights without one."""
        if self.checkpoint_callback and self.checkpoint_callback.best_model_path:
            super().test(self.lightning_module, datamodule=self.datamodule, ckpt_path="best")
        else:
            rank_zero_warn(
                "No best checkpoint was saved (validation off?); testing the final weights."
            )
            super().test(self.lightning_module, datamodule=self.datamodule)

    def print_results(self) -> None:
        """The run's folder and files, and the commands that show them."""
        run = run_folder(self)  # every process: under DDP this is a collective call
        if not self.is_global_zero:
            return
        lines = [f"Run: {run}/ ({run_files(run)})"]
        checkpoint = self.checkpoint_callback
        if checkpoint is not None and checkpoint.best_model_path:
            score = checkpoint.best_model_score
            best = Path(checkpoint.best_model_path)
            lines.append(f"Best checkpoint: {best} (val/acc {score:.4f})")
        if tensorboard(self) is not None:  # the report draws TensorBoard's events
            # Time Series (the first screen) shows accuracy and loss; Custom Scalars puts
            # training beside validation in one chart each
            tab = "http://localhost:6006/#custom_scalars"
            lines.append(f"Curves: tensorboard --logdir {run.parent}, then {tab}")
            lines.append(f"Picture: python -m mnist_lit report {run}")
        print("\n".join(lines))

    def validate(self, *args: Any, untrained: bool = False, **kwargs: Any) -> Any:
        """Evaluate a checkpoint on the validation split.

        Args:
            untrained: Evaluate the model's new, untrained weights: without this, --ckpt_path is
                required, so that a forgotten one never reports random weights' figures.
        """
        require_checkpoint(kwargs.get("ckpt_path"), untrained)
        check_run_folders(self)  # evaluations write into a run's folder too
        with reporting_full_disk(self), no_empty_run_left(self):
            results = super().validate(*args, **kwargs)
        self.print_evaluation()
        return results

    def test(self, *args: Any, untrained: bool = False, tta: bool = False, **kwargs: Any) -> Any:
        """Evaluate a checkpoint on the official test set.

        Args:
            untrained: Evaluate the model's new, untrained weights: without this, --ckpt_path is
                required, so that a forgotten one never reports random weights' figures.
            tta: Test-time augmentation: average each image's probabilities over itself and
                its one-pixel shifts (5 passes), written to the run's test_tta/ folder.
        """
        require_checkpoint(kwargs.get("ckpt_path"), untrained)
        model = kwargs.get("model", args[0] if args else None)
        if isinstance(model, MNISTClassifier):
            model.test_time_augmentation = tta
        elif tta:
            raise ConfigError("--tta needs the project's MNISTClassifier as the model")
        check_run_folders(self)  # evaluations write into a run's folder too
        with reporting_full_disk(self), no_empty_run_left(self):
            results = super().test(*args, **kwargs)
        self.print_evaluation()
        return results

    def print_evaluation(self) -> None:
        """Where a validate or test run wrote its results (see runs.place_evaluation_logs)."""
        if self.logger is None:
            return
        folder = run_folder(self)  # every process: under DDP this is a collective call
        if self.is_global_zero:
            print(f"Results: {folder}/ ({run_files(folder)})")
            if tensorboard(self) is not None:
                print(f"Curves: tensorboard --logdir {folder}")

    def predict(
        self,
        *args: Any,
        predictions_file: str | None = None,
        overwrite: bool = False,
        untrained: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Predict every input and write a CSV row for each, unreadable ones included.

        Args:
            predictions_file: CSV to write (default: predict/predictions.csv in the
                checkpoint's run folder).
            overwrite: Replace an existing predictions_file.
            untrained: Predict with the model's new, untrained weights: without this,
                --ckpt_path is required.
        """
        require_checkpoint(kwargs.get("ckpt_path"), untrained)
        check_run_folders(self)
        writer = next((c for c in self.callbacks if isinstance(c, PredictionWriter)), None)
        if writer is None:
            return super().predict(*args, **kwargs)
        writer.output = Path(predictions_file).resolve() if predictions_file else None
        writer.overwrite = overwrite
        writer.check_output()  # before any work, not after it
        with reporting_full_disk(self), no_empty_run_left(self):
            predictions = super().predict(*args, **kwargs)
        if not writer.written:  # no input could be read, so Lightning predicted nothing
            writer.write(self)
        if writer.summary:  # after the progress bar's last line
            print(writer.summary)
        return predictions


def check_cluster(trainer: L.Trainer) -> None:
    """A scheduler's processes that do not match the flags (SLURM's --ntasks-per-node and
    --trainer.devices, its nodes and --trainer.num_nodes) as one line, before any work: Lightning
    says so only when fit or an evaluation launches, in a traceback from every process."""
    cluster = getattr(trainer.strategy, "cluster_environment", None)
    if cluster is None:
        return
    try:
        cluster.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)
    except ValueError as error:
        raise ConfigError(str(error).replace(" HINT:", "")) from None


EVENTS_PREFIX = EVENTS.rstrip("*")


def run_files(run: Path) -> str:
    """What the run folder holds: its files by name, TensorBoard's events as such."""
    names = sorted(path.name for path in run.iterdir() if path.is_file())
    shown = [name for name in names if not name.startswith(EVENTS_PREFIX)]
    return ", ".join(shown + ["TensorBoard events"] * (len(shown) < len(names)))


def require_checkpoint(ckpt_path: str | None, untrained: bool) -> None:
    if ckpt_path is None and not untrained:
        raise ConfigError(
            "no --ckpt_path: pass a checkpoint of `fit` (or `last`/`best`: the newest run's), "
            "or --untrained true to evaluate untrained weights"
        )
