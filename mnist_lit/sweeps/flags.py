"""The flags a sweep passes to its trials: checked as `fit` would parse them with every config
before any training, and compared between workers (except those that describe the machine)."""

import io
import warnings
from argparse import ArgumentError
from contextlib import redirect_stdout

import yaml

from mnist_lit.cli import make_cli
from mnist_lit.errors import UserError
from mnist_lit.sweeps.file import RESERVED, SweepFile, SweepFileError, flag_value

# flags that may differ between the workers of one sweep: they do not change what is measured
PER_MACHINE = ("data.data_dir", "data.num_workers", "trainer.accelerator", "trainer.devices")


def flag_pairs(flags: list[str]) -> list[tuple[str, str | None]]:
    pairs, tokens = [], list(flags)
    while tokens:
        key, _, value = tokens.pop(0)[2:].partition("=")
        if not value and tokens and not tokens[0].startswith("--"):
            value = tokens.pop(0)
        pairs.append((key, value or None))
    return pairs


def check_flags(sweep: SweepFile, flags: list[str]) -> None:
    swept = set(sweep.grid) | set(sweep.space)
    for key, _ in flag_pairs(flags):
        if key == "config":
            continue  # a config applied after each trial's own, e.g. configs/dry_run.yaml
        if key.startswith(RESERVED):
            raise SweepFileError(
                f"--{key}: a sweep sets it for each trial (configs and seeds in the sweep file, "
                "run folders by --root and --name); remove it"
            )
        if key in swept:
            raise SweepFileError(f"--{key}: the sweep file sweeps it; remove the flag")


def check_trial_flags(sweep: SweepFile, flags: list[str]) -> dict[str, dict]:
    """Every config with the sweep's flags and each swept value parses as `fit` would, before
    any training: a wrong key or a value of the wrong type is one error naming it. Returns each
    config as `fit` resolves it with the flags."""
    checks = [({}, "")]
    checks += [({key: v}, f"{key}: {v}") for key, values in sweep.grid.items() for v in values]
    for key, distribution in sweep.space.items():
        values = getattr(distribution, "choices", None) or (distribution.low, distribution.high)
        checks += [({key: v}, f"{key}: {v}") for v in values]
    resolved = {}
    for name, config in sweep.configs.items():
        for setting, what in checks:
            args = ["fit", "--config", str(config), *flags]
            args += [item for k, v in setting.items() for item in (f"--{k}", flag_value(v))]
            printed = io.StringIO()
            try:
                with redirect_stdout(printed), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # e.g. that sys.argv differs from args
                    make_cli([*args, "--print_config"])
            except SystemExit:
                resolved.setdefault(name, yaml.safe_load(printed.getvalue()))
                continue
            except (ArgumentError, UserError) as error:
                where = f"{what} with config {name}" if what else f"config {name} with the flags"
                reason = " ".join(str(error).split())  # jsonargparse's run over lines
                raise SweepFileError(f"{sweep.path}: {where}: {reason}") from None
    return resolved


def common_flags(flags: list[str]) -> list[list]:
    """The flags that every worker of a sweep must share, for the stored study to compare."""
    return [[k, v] for k, v in flag_pairs(flags) if not k.startswith(PER_MACHINE)]
