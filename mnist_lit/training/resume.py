"""Which checkpoint a command continues from or evaluates, and where a resumed run goes on:
`--ckpt_path last`/`best` found where this command's checkpoints go, the file checked before
Lightning reads it, the model settings kept, and the run continued in its own folder."""

import inspect
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from mnist_lit.errors import ConfigError
from mnist_lit.module import MNISTClassifier
from mnist_lit.tracking.runs import checkpoint_finder, continue_run, place_evaluation_logs, run_of
from mnist_lit.training.checkpoint_io import CheckpointError, read_checkpoint


def prepare_checkpoint(subcommand: str, config: Namespace) -> None:
    """Resolve and check `config.ckpt_path` in place; point the logger at the run being
    continued (`fit`) or evaluated (the others). Runs before Lightning reads the checkpoint's
    hyperparameters, so a wrong file is one clear error and never runs code."""
    named = config.get("ckpt_path") in ("last", "best") and subcommand != "fit"
    if named or config.get("ckpt_path") == "last":
        config.ckpt_path = str(find_checkpoint(config.ckpt_path, config))
    ckpt_path = config.get("ckpt_path")
    if ckpt_path == "best" or str(ckpt_path).startswith(("hpc", "registry")):
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
        place_evaluation_logs(subcommand, config, run_of(config.ckpt_path))
        return
    check_same_model(config.ckpt_path, checkpoint, config.model)
    if run := run_of(config.ckpt_path):
        continue_run(config, run)


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


def check_same_model(path: str, checkpoint: dict[str, Any], model: Namespace) -> None:
    """A resumed run keeps its model: settings given now (those not at their defaults) that
    differ from the checkpoint's are refused, naming them, rather than silently replaced."""
    saved = checkpoint.get("hyper_parameters", {})
    signature = inspect.signature(MNISTClassifier.__init__).parameters
    differences = []
    for key, parameter in signature.items():
        if key not in saved or key not in model:
            continue
        given, default, trained = (
            comparable(v) for v in (model[key], parameter.default, saved[key])
        )
        if given != default and given != trained:
            differences.append(f"--model.{key} {given} (the checkpoint's is {trained})")
    if differences:
        raise CheckpointError(
            f"{path} was trained with other model settings: {', '.join(differences)}. Resume "
            "with the run's own config.yaml, or leave --ckpt_path out to start a new run"
        )


def comparable(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
