"""Command line: `python -m mnist_lit {fit,validate,test,predict,report,export,sweep,demo} ...`.

A LightningCLI over MNISTClassifier, MNISTDataModule and MNISTTrainer: every option is a YAML
key and a flag. `report` (report.py) and `export` (export.py) need no model, data or trainer and
parse their own few arguments; `mnist-lit --help` lists them with the others.
"""

import signal
import sys
from argparse import ArgumentError
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lit import demo, export, report, sweep
from mnist_lit.checkpointing import BestAndLastCheckpoint
from mnist_lit.checkpoints import AtomicCheckpointIO
from mnist_lit.console import NetworkSummary, quiet_lightning, run_progress_bar
from mnist_lit.data import MNISTDataModule
from mnist_lit.errors import UserError
from mnist_lit.imports import ALLOW_MORE, allow_imports
from mnist_lit.module import MNISTClassifier
from mnist_lit.resume import prepare_checkpoint
from mnist_lit.runs import check_run_folders, place_logs
from mnist_lit.tracking import SaveConfigToTensorBoard
from mnist_lit.trainer import MNISTTrainer, trainer_defaults

# each has HELP, parser() and run(options), and parse(argv) where it keeps unknown flags
TOOLS = {"report": report, "export": export, "sweep": sweep, "demo": demo}


class MNISTArgumentParser(LightningArgumentParser):
    """Raises a bad argument as an ArgumentError, for main() to show as one `error:` line
    instead of the usage text; keeps the subcommands action, so that the CLI can list report and
    export beside Lightning's subcommands."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("exit_on_error", False)
        super().__init__(*args, **kwargs)

    def add_subcommands(self, **kwargs):
        self.subcommands_action = super().add_subcommands(**kwargs)
        return self.subcommands_action


class MNISTCLI(LightningCLI):
    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict):
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if add_subcommands:  # listed for --help; main() runs them before Lightning parses
            for name, tool in TOOLS.items():
                self.parser.subcommands_action.add_subcommand(name, tool.parser(), help=tool.HELP)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # keep the best model by validation accuracy, and the last one for resuming (fit only)
        parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        if self.config.get("subcommand"):  # not built with run=False
            config = self.config[self.config.subcommand]
            place_logs(config)  # first: where `--ckpt_path last` looks depends on it
            prepare_checkpoint(self.config.subcommand, config)

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        # Lightning's writer unless the user configured another (a plugin in the trainer's
        # config cannot be written back into config.yaml)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def _instantiate_trainer(self, config: dict, callbacks: list[L.Callback]) -> L.Trainer:
        if config.get("enable_checkpointing") is False:
            # the checkpoint callback is the CLI's (see above), and Lightning refuses any with
            # checkpointing off: train without it, as the flag says
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        if config.get("enable_model_summary") is not False:
            callbacks = [*callbacks, NetworkSummary(max_depth=2)]  # Lightning's lists metrics too
        given = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in given
        ):
            callbacks = [*callbacks, run_progress_bar()]  # unless the user chose a bar
        return super()._instantiate_trainer(config, callbacks)

    def before_fit(self) -> None:
        check_run_folders(self.trainer)

    # evaluations write into a run's folder too: a file in its way is one error, not a traceback
    before_validate = before_test = before_predict = before_fit


def make_cli(args: ArgsType = None, callbacks: list | None = None, run: bool = True) -> MNISTCLI:
    """The CLI as `mnist-lit` builds it, with `callbacks` added to the defaults (benchmarks)."""
    allow_imports()
    defaults = trainer_defaults()
    defaults["callbacks"] += callbacks or []
    return MNISTCLI(
        MNISTClassifier,
        MNISTDataModule,
        trainer_class=MNISTTrainer,
        # MNISTClassifier chooses its optimizer and schedule (--model.lr, --model.schedule);
        # Lightning's --optimizer would silently replace them
        auto_configure_optimizers=False,
        seed_everything_default=0,  # Lightning's too, but with a warning on every run
        trainer_defaults=defaults,
        save_config_callback=SaveConfigToTensorBoard,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            "prog": "mnist-lit",
            "description": "Train, evaluate and use the MNIST CNN.",
        },
        parser_class=MNISTArgumentParser,
        args=args,
        run=run,
    )


def run(args: ArgsType = None, callbacks: list | None = None) -> MNISTCLI | Path:
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, list) and argv[:1] and argv[0] in TOOLS:
        tool = TOOLS[argv[0]]
        parse = getattr(tool, "parse", lambda argv: tool.parser().parse_args(argv))
        return tool.run(parse(argv[1:]))
    quiet_lightning()
    return make_cli(args, callbacks)


def main(args: ArgsType = None, callbacks: list | None = None) -> MNISTCLI | Path:
    """`mnist-lit`; `callbacks` are added to every run's (tests, benchmarks)."""
    try:
        result = run(args, callbacks)
        leave_process_group()
        return result
    except SIGTERMException:
        # Lightning stops on SIGTERM with exit status 0; schedulers must see a preemption
        print("Stopped by SIGTERM", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except KeyboardInterrupt:  # Ctrl-C outside Lightning's loops (parsing, reading images)
        print("Stopped by Ctrl-C", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    except SystemExit as exit_:
        if isinstance(exit_.__context__, KeyboardInterrupt):  # Lightning's exit(1) after Ctrl-C
            print("Stopped by Ctrl-C", file=sys.stderr)
            raise SystemExit(128 + signal.SIGINT) from None
        raise
    except ArgumentError as error:  # a bad flag or config value
        hint = f"\nAllow a package with {ALLOW_MORE}=name" if "is not allowed" in str(error) else ""
        print(f"error: {error}{hint}\nSee: mnist-lit [SUBCOMMAND] --help", file=sys.stderr)
        raise SystemExit(2) from None
    except MisconfigurationException as error:  # Lightning's word for a setting that cannot work
        # e.g. --trainer.accelerator gpu on a machine without one, --trainer.max_epochs -5
        print(f"error: {error}\nSee: mnist-lit [SUBCOMMAND] --help", file=sys.stderr)
        raise SystemExit(2) from None
    except UserError as error:  # a known problem with the user's input: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_status) from None
    except (MemoryError, RuntimeError) as error:  # after UserError: some are RuntimeErrors
        if not out_of_memory(error):
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "MemoryError"
        print(f"error: out of memory ({reason}); lower --data.batch_size", file=sys.stderr)
        raise SystemExit(1) from None


def out_of_memory(error: BaseException) -> bool:
    """A failed allocation: torch's on GPUs, its CPU allocator's message, or Python's own."""
    if isinstance(error, MemoryError | torch.OutOfMemoryError):
        return True
    message = str(error)
    return "can't allocate memory" in message or "not enough memory" in message


def leave_process_group() -> None:
    """After a DDP run, every process leaves the group together while the interpreter is whole.
    Gloo's worker threads that still hold tensors at interpreter shutdown abort the process
    (SIGABRT, "terminate called without an active exception"), seen once after a CPU DDP fit."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
