"""Command line: `python -m mnist_lit {fit,validate,test,predict} --config configs/base.yaml`.

A LightningCLI over MNISTClassifier and MNISTDataModule; every option is a YAML key and a flag.
"""

import sys

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from mnist_lit.callbacks import PredictionWriter, RunSummary
from mnist_lit.data import MNISTDataError, MNISTDataModule
from mnist_lit.module import MNISTClassifier


class MNISTCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Keep the best model by validation accuracy, and the last one for resuming.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
            }
        )

    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs
    ) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "fit":
            parser.add_argument(
                "--test_after_fit",
                type=bool,
                default=True,
                help="After fitting, test the best checkpoint on the official test set.",
            )
        return parser

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


def main(args: ArgsType = None) -> MNISTCLI:
    try:
        return MNISTCLI(
            MNISTClassifier,
            MNISTDataModule,
            trainer_defaults={"callbacks": [RunSummary(), PredictionWriter()]},
            save_config_kwargs={"overwrite": True},
            args=args,
        )
    except MNISTDataError as error:
        # A known data problem: one clear line, not a traceback.
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
