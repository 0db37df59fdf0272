"""Which checkpoint a command continues from or evaluates, and where a resumed run goes on:
`--ckpt_path last`/`best` found where this command's checkpoints go, the file checked before
Lightning reads it, the model settings kept, and the run continued in its own folder."""

import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch.utilities import rank_zero_only

from mnist_lit.errors import ConfigError
from mnist_lit.module import MNISTClassifier
from mnist_lit.tracking.runs import (
    checkpoint_finder,
    continue_run,
    place_evaluation_logs,
    place_logs,
    recorded_config,
    run_of,
)
from mnist_lit.training.checkpoint_io import CheckpointError, read_checkpoint
from mnist_lit.training.random_states import check_seed

GROUPS = ("--model.", "--data.")  # the settings whose flags keys_given reads
RUNS_DATA = ("data_dir", "val_size", "split_seed")  # where the images are, which validate


def prepare_command(subcommand: str, config: Namespace, argv: list[str]) -> None:
    """What a command's arguments decide before anything is built: the seed checked, where it
    writes (first: where `--ckpt_path last` looks depends on it), and its checkpoint."""
    check_seed(config.get("seed_everything"))
    place_logs(config)
    prepare_checkpoint(subcommand, config, keys_given(argv, config))


def prepare_checkpoint(subcommand: str, config: Namespace, given: set[str] = frozenset()) -> None:
    """Resolve and check `config.ckpt_path` in place; point the logger at the run being
    continued (`fit`) or evaluated (the others). Runs before Lightning reads the checkpoint's
    hyperparameters, so a wrong file is one clear error and never runs code. `given`: the model
    and data settings the command sets by flag or config file (keys_given)."""
    named = config.get("ckpt_path") in ("last", "best") and subcommand != "fit"
    if named or config.get("ckpt_path") == "last":
        config.ckpt_path = str(find_checkpoint(config.ckpt_path, config))
    ckpt_path = config.get("ckpt_path")
    if ckpt_path in ("best", "hpc") or re.fullmatch(r"registry(:.*)?", str(ckpt_path), re.I):
        # Lightning's other names: `best` has no meaning before fitting, and `hpc` and the
        # model registry would skip the checks below
        raise ConfigError(
            f"--ckpt_path {ckpt_path}: {subcommand} takes a checkpoint file, `last`"
            + ("" if subcommand == "fit" else " or `best`")
        )
    if ckpt_path is None:
        if subcommand != "fit":
            place_evaluation_logs(subcommand, config, run=None)
        return
    checkpoint = read_checkpoint(config.ckpt_path)
    if subcommand != "fit":
        # LightningCLI builds the model from the checkpoint's settings, whatever is given now
        differences = model_differences(checkpoint, config.model, given)
        if differences and rank_zero_only.rank == 0:  # every DDP process parses the command
            print(
                f"note: {subcommand} evaluates {config.ckpt_path} with the model settings it was "
                f"trained with; not used: {', '.join(differences)}",
                file=sys.stderr,
            )
        place_evaluation_logs(subcommand, config, run_of(config.ckpt_path))
        read_the_runs_data(config, run_of(config.ckpt_path), given)
        return
    if differences := model_differences(checkpoint, config.model, given):
        raise CheckpointError(
            f"{config.ckpt_path} was trained with other model settings: "
            f"{', '.join(differences)}. Resume with the run's own config.yaml, or leave "
            "--ckpt_path out to start a new run"
        )
    if run := run_of(config.ckpt_path):
        continue_run(config, run)
        read_the_runs_data(config, run, given)


def read_the_runs_data(config: Namespace, run: Path | None, given: set[str]) -> None:
    """A command on a run's checkpoint reads the data that the run recorded: its folder (said
    once, at `fit`; unless it is gone) and the split of its validation images, for what is
    not given now."""
    data = recorded_config(run).get("data") if run else None
    for key in RUNS_DATA if isinstance(data, dict) else ():
        recorded = data.get(key)
        if f"data.{key}" in given or recorded is None:
            continue
        if key != "data_dir" or (isinstance(recorded, str) and Path(recorded).is_dir()):
            config.data[key] = recorded


def find_checkpoint(name: str, config: Namespace) -> Path:
    """`--ckpt_path last` or `best`: that checkpoint of the newest run where this command's
    checkpoints go. Lightning itself would look only in the new run's own, empty, folder and
    quietly start over, or evaluate untrained weights."""
    where, find = checkpoint_finder(config)
    found = find(name)
    if found is None:
        raise CheckpointError(
            f"--ckpt_path {name}: no {Path(where) / f'{name}.ckpt'} was found; pass a checkpoint "
            "path, or leave --ckpt_path out to start a new run"
        )
    return found


def model_differences(checkpoint: dict[str, Any], model: Namespace, given: set[str]) -> list[str]:
    """Model settings set now (by flag or config file, at their defaults or not, or any not at
    its default) that differ from the checkpoint's, as `--model.KEY now (the checkpoint's is X)`."""
    saved = checkpoint.get("hyper_parameters") or {}
    signature = inspect.signature(MNISTClassifier.__init__).parameters
    differences = []
    for key, parameter in signature.items():
        if key not in saved or key not in model:
            continue
        now, default, trained = (comparable(v) for v in (model[key], parameter.default, saved[key]))
        if (f"model.{key}" in given or now != default) and now != trained:
            differences.append(f"--model.{key} {now} (the checkpoint's is {trained})")
    return differences


def keys_given(argv: list[str], config: Namespace) -> set[str]:
    """The model and data settings (`model.KEY`, `data.KEY`) that a command sets by flags or
    in its config files."""
    keys = {token[2:].split("=")[0] for token in argv if token.startswith(GROUPS)}
    for item in config.get("config") or []:
        try:
            content = yaml.safe_load(Path(os.fspath(item)).read_text())
        except (OSError, TypeError, ValueError, yaml.YAMLError):
            continue  # not a file (a YAML string given to --config, say)
        for group in ("model", "data"):
            values = content.get(group) if isinstance(content, dict) else None
            if isinstance(values, dict):
                keys |= {f"{group}.{key}" for key in values.get("init_args", values)}
    return keys


def comparable(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
