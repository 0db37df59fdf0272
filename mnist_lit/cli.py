"""LightningCLI over MNISTClassifier, MNISTDataModule and MNISTTrainer: `fit`, `validate`,
`test` and `predict`, every option a YAML key and a flag. The other subcommands and the
one-line errors are `mnist-lit`'s own (__main__.py)."""

import os
import sys

from jsonargparse import set_parsing_settings
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from mnist_lit.data import MNISTDataModule
from mnist_lit.errors import ConfigError
from mnist_lit.module import MNISTClassifier
from mnist_lit.tracking.tensorboard import SaveConfigToTensorBoard
from mnist_lit.training.checkpointing import BestAndLastCheckpoint
from mnist_lit.training.console import quiet_lightning
from mnist_lit.training.resume import prepare_command
from mnist_lit.training.trainer import MNISTTrainer, trainer_defaults

# jsonargparse imports whatever a `class_path` names while parsing, so a shared config.yaml could
# otherwise run any code: every package but these is refused before anything is imported
ALLOWED_IMPORTS = ["torch", "lightning", "torchmetrics", "mnist_lit"]
ALLOW_MORE = "MNIST_LIT_ALLOW_IMPORTS"  # comma-separated: users' own callbacks, loggers, ...
# a user's own defaults for every command (e.g. `data: {data_dir: /data}`), below any --config
DEFAULTS = "MNIST_LIT_DEFAULTS"
DEFAULTS_FILE = "~/.config/mnist-lit/defaults.yaml"

COMMANDS = ("fit", "validate", "test", "predict")  # LightningCLI's


def allow_imports() -> None:
    """Deny every import path but ALLOWED_IMPORTS and those named in $MNIST_LIT_ALLOW_IMPORTS."""
    more = [name.strip() for name in os.environ.get(ALLOW_MORE, "").split(",") if name.strip()]
    try:
        set_parsing_settings(
            import_path_denylist=["*"], import_path_allowlist=ALLOWED_IMPORTS + more
        )
    except ValueError as error:
        raise ConfigError(f"{ALLOW_MORE}={os.environ[ALLOW_MORE]!r}: {error}") from None


class MNISTArgumentParser(LightningArgumentParser):
    """Keeps the subcommands action, to list the other tools in it."""

    def add_subcommands(self, **kwargs):
        self.subcommands_action = super().add_subcommands(**kwargs)
        return self.subcommands_action


class MNISTCLI(LightningCLI):
    def __init__(self, *args, only: str | None, tools: dict | None, **kwargs) -> None:
        """`only`: the subcommand that runs, when the arguments name one (each parser takes a
        fifth of a second to build); `tools`: the other subcommands, listed in --help."""
        self.only, self.tools = only, tools or {}
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:
        every = LightningCLI.subcommands()
        return {self.only: every[self.only]} if self.only else every

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict):
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        for name, (help, parser) in self.tools.items():  # for --help: `mnist-lit` runs them
            self.parser.subcommands_action.add_subcommand(name, parser(), help=help)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # keep the best model by validation accuracy, and the last one for resuming (fit only)
        parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        if self.config.get("subcommand"):  # not built with run=False
            argv = [str(a) for a in (args if isinstance(args, list) else sys.argv[1:])]
            prepare_command(self.config.subcommand, self.config[self.config.subcommand], argv)

    def _set_seed(self) -> None:  # evaluations draw nothing at random: no "Seed set" line
        if self.subcommand in (None, "fit"):
            super()._set_seed()


def subcommand_kwargs(command: str, defaults: str) -> dict:
    """The user's defaults file, and a `COMMAND --help` that starts with what it does and where
    the project's options are among Lightning's hundreds (not with 80 lines of usage)."""
    does = (getattr(MNISTTrainer, command).__doc__ or "").strip().splitlines()[0]
    return {
        "exit_on_error": False,  # an ArgumentError, which `mnist-lit` shows as one `error:` line
        "default_config_files": [defaults],
        "usage": f"mnist-lit {command} [--config FILE] [--GROUP.KEY VALUE ...]",
        "description": f"{does} This project's options are --model.*, --data.* and "
        "--checkpoint.*, after Lightning's --trainer.*; --print_config shows every value.",
    }


def make_cli(
    args: ArgsType = None,
    callbacks: list | None = None,
    run: bool = True,
    tools: dict | None = None,
) -> MNISTCLI:
    """The CLI as `mnist-lit` builds it, with `callbacks` added to the defaults (benchmarks)."""
    quiet_lightning()
    allow_imports()
    defaults = os.environ.get(DEFAULTS) or DEFAULTS_FILE
    argv = sys.argv[1:] if args is None else args
    only = argv[0] if isinstance(argv, list) and argv and argv[0] in COMMANDS else None
    return MNISTCLI(
        MNISTClassifier,
        MNISTDataModule,
        trainer_class=MNISTTrainer,
        # MNISTClassifier chooses its optimizer and schedule (--model.lr, --model.schedule);
        # Lightning's --optimizer would silently replace them
        auto_configure_optimizers=False,
        seed_everything_default=0,  # Lightning's too, but with a warning on every run
        trainer_defaults=trainer_defaults(callbacks),
        save_config_callback=SaveConfigToTensorBoard,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            "prog": "mnist-lit",
            "description": "Train, evaluate and use the MNIST CNN.",
            "exit_on_error": False,
            **{
                command: subcommand_kwargs(command, defaults)
                for command in ([only] if only else COMMANDS)
            },
        },
        parser_class=MNISTArgumentParser,
        args=args,
        run=run,
        only=only,
        tools=tools,
    )
