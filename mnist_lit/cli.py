"""Command line: `python -m mnist_lit {fit,validate,test,predict} --config configs/base.yaml`.

A LightningCLI over MNISTClassifier and MNISTDataModule; every option is a YAML key and a flag.
`python -m mnist_lit report RUN` draws a run's report picture (report.py), and
`python -m mnist_lit export --ckpt_path CKPT` writes the network for other programs (export.py).
"""

import os
import signal
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lit import export, report
from mnist_lit.callbacks import (
    FiniteLossGuard,
    NonFiniteLossError,
    PredictionOutputError,
    PredictionWriter,
    RunSummary,
)
from mnist_lit.checkpoints import (
    AtomicCheckpointIO,
    CheckpointError,
    CheckpointWriteError,
    read_checkpoint,
)
from mnist_lit.data import MNISTDataError, MNISTDataModule
from mnist_lit.module import MNISTClassifier
from mnist_lit.resume import (
    BestAndLastCheckpoint,
    RandomStatesInCheckpoint,
    newest_last_checkpoint,
)
from mnist_lit.tracking import (
    HyperparametersWithMetrics,
    PredictionPictures,
    SaveConfigToTensorBoard,
)


def trainer_defaults() -> dict:
    """The logger and the callbacks every run gets, on top of any given in configs or flags."""
    return {
        "max_epochs": 15,  # the article's recipe, rather than Lightning's 1000
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            # the HParams tab gets real metrics (see tracking.py), not an hp_metric of -1
            "init_args": {"save_dir": ".", "default_hp_metric": False},
        },
        "callbacks": [
            RunSummary(),
            PredictionWriter(),
            PredictionPictures(),
            HyperparametersWithMetrics(),
            RandomStatesInCheckpoint(),
            FiniteLossGuard(),
        ],
    }


class OutputFolderError(PermissionError):
    """A folder the run must write to cannot be written."""


def check_writable(folder: Path, flag: str) -> None:
    """Raise OutputFolderError unless `folder` exists as a writable folder or can be created.
    Nothing is created: under DDP every process checks, and only rank 0 makes the folders."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        problem = f"{existing} is a file"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    else:
        return
    raise OutputFolderError(f"cannot write to {folder}: {problem}. Choose another with {flag}")


class MNISTCLI(LightningCLI):
    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs
    ) -> LightningArgumentParser:
        # Lightning's hook for extra arguments, add_arguments_to_parser, cannot tell subcommands
        # apart; these arguments belong to fit or predict alone.
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "fit":
            # keep the best model by validation accuracy, and the last one for resuming
            parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")
            parser.set_defaults(
                {
                    "checkpoint.monitor": "val/acc",
                    "checkpoint.mode": "max",
                    "checkpoint.filename": "best",
                    "checkpoint.save_last": True,
                }
            )
            parser.add_argument(
                "--test_after_fit",
                type=bool,
                default=True,
                help="After fitting, test the best checkpoint on the official test set.",
            )
        if subcommand == "predict":
            parser.add_argument(
                "--predictions_file",
                type=str | None,
                default=None,
                help="CSV to write (default: predictions.csv in the run's log folder).",
            )
            parser.add_argument(
                "--overwrite",
                type=bool,
                default=False,
                help="Replace an existing predictions_file.",
            )
        return parser

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        # Lightning's writer unless the user configured another (a plugin in the trainer's
        # config cannot be written back into config.yaml)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint's hyperparameters here, first of all: check the file
        # before that, so a wrong one is one clear error and never runs code.
        if not self.config.get("subcommand"):  # built with run=False: nothing to load
            return
        config = self.config[self.config.subcommand]
        if config.get("ckpt_path") == "last" and self.config.subcommand == "fit":
            config.ckpt_path = str(newest_last_checkpoint(self._log_root(config)))
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            read_checkpoint(ckpt_path)
        super()._parse_ckpt_path()

    @staticmethod
    def _log_root(config) -> Path:
        """Where this run's TensorBoard logger puts its version_N folders."""
        logger = config.trainer.get("logger")
        arguments = getattr(logger, "init_args", None) or {}
        save_dir = arguments.get("save_dir") or config.trainer.get("default_root_dir") or "."
        return Path(save_dir) / (arguments.get("name") or "lightning_logs")

    def _prediction_writer(self) -> PredictionWriter:
        return next(c for c in self.trainer.callbacks if isinstance(c, PredictionWriter))

    def after_predict(self) -> None:
        if len(self.datamodule.predict_set) == 0:  # no image could be read: Lightning ran nothing
            no_rows = torch.empty(0, dtype=torch.long), torch.empty(0, 10)
            self._prediction_writer().write(self.trainer, *no_rows)

    def before_predict(self) -> None:
        writer = self._prediction_writer()
        file = self.config.predict.predictions_file
        writer.output = Path(file).resolve() if file else None
        writer.overwrite = self.config.predict.overwrite
        writer.check_output()  # before any work, not after it

    def before_fit(self) -> None:
        # Lightning would find out at the first write (the logger's folder, or the first
        # checkpoint an epoch later), with a traceback.
        trainer = self.trainer
        log_flag = (
            "--trainer.logger.init_args.save_dir"
            if trainer.logger
            else "--trainer.default_root_dir"
        )
        check_writable(Path(trainer.log_dir or trainer.default_root_dir), log_flag)
        for callback in trainer.checkpoint_callbacks:
            if callback.dirpath:
                check_writable(Path(callback.dirpath), "--checkpoint.dirpath")

    def after_fit(self) -> None:
        if not self.config.fit.test_after_fit or self.trainer.fast_dev_run:
            return
        if self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path:
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best")
        else:
            rank_zero_warn(
                "No best checkpoint was saved (validation off?); testing the final weights."
            )
            self.trainer.test(self.model, datamodule=self.datamodule)


def make_cli(args: ArgsType = None, callbacks: list | None = None, run: bool = True) -> MNISTCLI:
    """The CLI as `mnist-lit` builds it, with `callbacks` added to the defaults (benchmarks)."""
    defaults = trainer_defaults()
    defaults["callbacks"] += callbacks or []
    return MNISTCLI(
        MNISTClassifier,
        MNISTDataModule,
        trainer_defaults=defaults,
        save_config_callback=SaveConfigToTensorBoard,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            "prog": "mnist-lit",
            "description": "Train, evaluate and use the MNIST CNN. "
            "Also: mnist-lit report RUN, mnist-lit export --ckpt_path CKPT",
        },
        args=args,
        run=run,
    )


def main(args: ArgsType = None) -> MNISTCLI | Path:
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, list) and argv[:1] in (["report"], ["export"]):
        return {"report": report, "export": export}[argv[0]].main(argv[1:])
    # Raised inside Lightning with recent torch and jsonargparse, or about fit-only callbacks when
    # evaluating a checkpoint: nothing a user can act on.
    for noise in (
        r".*isinstance\(treespec, LeafSpec\)",
        r"(?s)\s*By default only one JsonargparseDeprecationWarning",
        r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint",
    ):
        warnings.filterwarnings("ignore", message=noise)
    try:
        return make_cli(args)
    except SIGTERMException:
        # Lightning stops on SIGTERM with exit status 0; schedulers must see a preemption
        print("Stopped by SIGTERM; resume with --ckpt_path last", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except (
        MNISTDataError,
        PredictionOutputError,
        CheckpointError,
        CheckpointWriteError,
        NonFiniteLossError,
        OutputFolderError,
    ) as error:
        # A known problem with the user's files: one clear line, not a traceback.
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
