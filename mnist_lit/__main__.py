"""`mnist-lit` (or `python -m mnist_lit`): the subcommands and their one-line errors.

`fit`, `validate`, `test` and `predict` are LightningCLI's (cli.py); the tools below parse their
own few arguments and are imported only when run or listed, so that `fit` never loads Optuna
or Gradio.
"""

import importlib
import signal
import sys
from argparse import ArgumentError
from collections.abc import Callable
from pathlib import Path

import torch
from jsonargparse import ArgumentParser
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import ArgsType
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lit.cli import ALLOW_MORE, COMMANDS, MNISTCLI, make_cli
from mnist_lit.errors import UserError

# each module has parser() and run(options), and parse(argv) where it keeps unknown flags
TOOLS = {
    "report": (
        "mnist_lit.sweeps.report",  # a sweep's folder, else runs (tracking/report.py)
        "Draw a run's curves and pictures (or several runs' curves) as one PNG.",
    ),
    "export": (
        "mnist_lit.inference.export",
        "Write the trained network as ONNX or a torch.export program, for other programs.",
    ),
    "sweep": (
        "mnist_lit.sweeps.command",
        "Run a sweep file's fits (grid or Optuna search, over seeds), resumably, and summarise.",
    ),
    "demo": (
        "mnist_lit.inference.demo",
        "Serve a web page where you draw a digit and see what the model reads.",
    ),
}


# the tools for --help: name -> (help, a function making its parser)
Tools = dict[str, tuple[str, Callable[[], ArgumentParser]]]


def tool_parsers() -> Tools:
    """The tools' parsers, for `mnist-lit --help` and for errors that list the subcommands."""
    return {
        name: (help, lambda module=module: importlib.import_module(module).parser())
        for name, (module, help) in TOOLS.items()
    }


def run(args: ArgsType = None, callbacks: list | None = None) -> MNISTCLI | Path:
    argv = sys.argv[1:] if args is None else args
    first = argv[0] if isinstance(argv, list) and argv else None
    if first in TOOLS:
        tool = importlib.import_module(TOOLS[first][0])
        parse = getattr(tool, "parse", lambda argv: tool.parser().parse_args(argv))
        return tool.run(parse(argv[1:]))
    tools = None if first in COMMANDS else tool_parsers()
    return make_cli(args, callbacks, tools=tools)


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


if __name__ == "__main__":
    main()
