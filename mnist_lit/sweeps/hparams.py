"""A sweep's HParams experiment in TensorBoard: written in the sweep's folder, with the keys the
sweep varies as its columns (its trials write none of their own: tracking.SHARED_EXPERIMENT)."""

from pathlib import Path
from typing import Any

from tensorboard.compat.proto import summary_pb2
from torch.utils.tensorboard import SummaryWriter

from mnist_lit.sweeps.file import SweepFile
from mnist_lit.tracking.tensorboard import RECIPE_COLUMNS, experiment_summary


def write_experiment(folder: Path, sweep: SweepFile, resolved: dict[str, dict]) -> None:
    """TensorBoard's HParams tab on the sweep's folder: the varied keys as its columns."""
    with SummaryWriter(folder) as writer:
        swept = [*sweep.grid, *sweep.space]
        experiment = sweep_experiment(swept, varied_keys(sweep, resolved))
        writer._get_file_writer().add_summary(experiment)


def hparam_name(cli_key: str) -> str | None:
    """The HParams column a run logs for a CLI key (see run_hyperparameters), if it logs one."""
    if cli_key == "seed_everything":
        return "seed"
    section, _, name = cli_key.partition(".")
    logged = section in ("model", "data") or cli_key in ("trainer.precision", "trainer.max_epochs")
    return f"{section}/{name}" if logged and name else None


def sweep_experiment(swept: list[str], varied: list[str]) -> summary_pb2.Summary:
    """The HParams experiment of a sweep: the keys it varies as its columns. TensorBoard ticks
    five columns: the swept keys, then those of RECIPE_COLUMNS that the configs or seeds vary."""
    rank = {name: index for index, name in enumerate(RECIPE_COLUMNS)}
    others = sorted(filter(None, map(hparam_name, varied)), key=lambda n: rank.get(n, len(rank)))
    names = list(dict.fromkeys([*filter(None, map(hparam_name, swept)), *others]))
    return experiment_summary(names[:5], names[5:])


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and "class_path" not in value:
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def varied_keys(sweep: SweepFile, resolved: dict[str, dict]) -> list[str]:
    """The CLI keys, other than the swept ones, whose values differ between the sweep's trials:
    those its configs set differently, and the seed."""
    configs = [flatten(config) for config in resolved.values()]
    differing = [k for k in configs[0] if any(c.get(k) != configs[0][k] for c in configs[1:])]
    return differing + (["seed_everything"] if len(sweep.seeds) > 1 else [])
