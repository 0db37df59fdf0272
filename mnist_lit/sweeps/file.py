"""A sweep file (`configs/sweeps/*.yaml`): the configs to start from, the seeds to repeat each
setting with, and either a grid of CLI values or an Optuna search space, checked whole before
any training."""

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import optuna
import yaml

from mnist_lit.errors import ConfigError
from mnist_lit.training.random_states import check_seed

FILE_KEYS = {"configs", "seeds", "grid", "search", "prune"}
MAX_GRID_TRIALS = 1000  # each is stored before any trains, a few milliseconds apiece
SEARCH_KEYS = {"trials", "space"}
RANGE_KEYS = {"low", "high", "log", "step"}
# Set by the sweep for each trial: a sweep file or a flag may not set them too
RESERVED = (
    "config", "seed_everything", "ckpt_path", "trainer.logger", "trainer.default_root_dir",
    "checkpoint.dirpath",  # each trial keeps its checkpoints in its own run folder
)  # fmt: skip


class SweepFileError(ConfigError):
    """A sweep file that cannot describe a sweep; the message names the key."""


@dataclass
class SweepFile:
    path: Path
    configs: dict[str, Path]  # by name (the file's stem), resolved against the sweep file
    seeds: list[int]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    space: dict[str, optuna.distributions.BaseDistribution] = field(default_factory=dict)
    trials: int = 0  # a search's budget of settings; 0 for a grid
    prune: float | None = None  # stop a setting's seeds once it is below the best at this p

    @property
    def is_search(self) -> bool:
        return bool(self.space)

    def grid_settings(self) -> list[dict[str, Any]]:
        """Every setting of a grid, as the trial parameters Optuna records (config included)."""
        axes = {"config": list(self.configs)} if len(self.configs) > 1 else {}
        axes |= {key: [encode(v) for v in values] for key, values in self.grid.items()}
        return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]

    def fingerprint(self) -> dict[str, Any]:
        """What the stored study must still match when a sweep is started again."""
        return {
            "configs": {name: digest(path) for name, path in self.configs.items()},
            "seeds": self.seeds,
            "grid": {key: [encode(v) for v in values] for key, values in self.grid.items()},
            "search": {"trials": self.trials, "space": {k: repr(d) for k, d in self.space.items()}},
            **({"prune": self.prune} if self.prune is not None else {}),  # older studies match
        }


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def encode(value: Any) -> Any:
    """Optuna stores scalars; lists and mappings (e.g. model.channels) travel as JSON text."""
    scalar = value is None or isinstance(value, (bool, int, float, str))
    return value if scalar else json.dumps(value)


def flag_value(value: Any) -> str:
    """A recorded value as a command-line flag's text."""
    return value if isinstance(value, str) else json.dumps(value)


def fail(path: Path, message: str) -> NoReturn:
    raise SweepFileError(f"sweep file {path}: {message}")


def read_sweep_file(path: Path) -> SweepFile:
    if not path.is_file():
        raise SweepFileError(f"sweep file {path} does not exist; see configs/sweeps/ for examples")
    try:
        text = path.read_text()
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, yaml.SafeLoader)):
            # an alias repeats a value by reference: nested, a few lines expand to billions
            fail(path, "uses a YAML alias (*name); write each value out")
        content = yaml.safe_load(text)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        fail(path, f"not valid YAML ({str(error).splitlines()[0]})")
    if not isinstance(content, dict):
        fail(path, "must be a mapping with configs, seeds and a grid or a search")
    if unknown := set(content) - FILE_KEYS:
        fail(path, f"unknown keys {sorted(unknown)}; the keys are {sorted(FILE_KEYS)}")
    if "grid" in content and "search" in content:
        fail(path, "has both a grid and a search; a sweep is one or the other")
    sweep = SweepFile(path, read_configs(path, content.get("configs")), read_seeds(path, content))
    if "grid" in content:
        sweep.grid = read_grid(path, content["grid"])
        if (trials := len(sweep.grid_settings()) * len(sweep.seeds)) > MAX_GRID_TRIALS:
            limit = f"a sweep stores at most {MAX_GRID_TRIALS:,}"
            fail(path, f"its grid is {trials:,} trials (settings x seeds); {limit}: split it")
    if "search" in content:
        sweep.trials, sweep.space = read_search(path, content["search"])
    if content.get("prune") is not None:
        sweep.prune = read_prune(path, content["prune"], sweep.seeds)
    return sweep


def read_prune(path: Path, prune: Any, seeds: list[int]) -> float:
    """`prune: P`: a setting's remaining seeds are not run once it is below the best setting
    with a one-sided p under P (pruning.py); its first two seeds always run."""
    if isinstance(prune, bool) or not isinstance(prune, (int, float)) or not 0 < prune < 1:
        fail(path, f"prune must be a p-value between 0 and 1, e.g. 0.05, not {prune!r}")
    if len(seeds) < 3:
        fail(path, f"prune needs 3 seeds or more: a setting is compared after 2, so {seeds} "
             "leaves no seed to save")  # fmt: skip
    return float(prune)


def read_configs(path: Path, configs: Any) -> dict[str, Path]:
    if not isinstance(configs, list) or not configs or not all(isinstance(c, str) for c in configs):
        fail(path, "configs must be a list of config files, e.g. [../fast.yaml]")
    resolved = {Path(c).stem: (path.parent / c).resolve() for c in configs}
    if len(resolved) < len(configs):
        fail(path, "configs must have different file names: the names label the settings")
    for config in configs:
        if not (path.parent / config).is_file():
            fail(path, f"config {config} is not a file (paths are relative to the sweep file)")
    return resolved


def read_seeds(path: Path, content: dict) -> list[int]:
    seeds = content.get("seeds", [42])
    if not isinstance(seeds, list) or not seeds:
        fail(path, "seeds must be a non-empty list of integers, e.g. [42, 1, 2]")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        fail(path, f"seeds must be integers, not {seeds}")
    if len(set(seeds)) < len(seeds):
        fail(path, f"seeds {seeds} repeat a seed")
    try:
        for seed in seeds:
            check_seed(seed, "seed")
    except ConfigError as error:
        fail(path, str(error))
    return seeds


def check_key(path: Path, key: Any) -> None:
    if not isinstance(key, str) or not key or key.startswith("-"):
        fail(path, f"{key!r} is not a CLI key; write keys as in flags without --, e.g. model.lr")
    if key.startswith(RESERVED):
        fail(path, f"{key} is set by the sweep itself (configs, seeds and run folders)")


def read_grid(path: Path, grid: Any) -> dict[str, list[Any]]:
    if not isinstance(grid, dict) or not grid:
        fail(path, "grid must map CLI keys to lists of values, e.g. model.lr: [1.0e-3, 3.0e-3]")
    for key, values in grid.items():
        check_key(path, key)
        if not isinstance(values, list) or not values:
            fail(path, f"grid key {key} must have a non-empty list of values, not {values!r}")
        if len({json.dumps(v) for v in values}) < len(values):
            fail(path, f"grid key {key} repeats a value in {values}")
    return grid


def read_search(path: Path, search: Any) -> tuple[int, dict]:
    if not isinstance(search, dict) or set(search) != SEARCH_KEYS:
        fail(path, "search must have trials (how many settings to try) and space")
    trials, space = search["trials"], search["space"]
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        fail(path, f"search trials must be a positive integer, not {trials!r}")
    if not isinstance(space, dict) or not space:
        fail(path, "search space must map CLI keys to ranges ({low, high, log}) or {choices}")
    return trials, {key: read_range(path, key, spec) for key, spec in space.items()}


def read_range(path: Path, key: str, spec: Any) -> optuna.distributions.BaseDistribution:
    """{choices: [...]} is categorical; {low, high} is int when both are integers, else float;
    `log: true` samples on a log scale, `step` on a lattice."""
    check_key(path, key)
    where = f"search space {key}"
    if isinstance(spec, dict) and set(spec) == {"choices"}:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            fail(path, f"{where}: choices must be a non-empty list")
        return optuna.distributions.CategoricalDistribution([encode(c) for c in choices])
    if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) or set(spec) - RANGE_KEYS:
        fail(path, f"{where} must be {{low, high}} (optionally log, step) or {{choices}}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    numbers = (low, high) + ((step,) if step is not None else ())
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers):
        fail(path, f"{where}: low, high and step must be numbers")
    if not low < high:
        fail(path, f"{where}: low {low} must be below high {high}")
    if log and (low <= 0 or step is not None):
        fail(path, f"{where}: a log scale needs low > 0 and no step")
    if step is not None and step <= 0:
        fail(path, f"{where}: step {step} must be positive")
    if all(isinstance(n, int) for n in numbers):
        return optuna.distributions.IntDistribution(low, high, log=log, step=step or 1)
    return optuna.distributions.FloatDistribution(low, high, log=log, step=step)


def setting_label(setting: dict[str, Any], configs: dict[str, Any]) -> str:
    """A setting's name, also its folder: the config's name, then key=value for each swept key
    (the key's last part, e.g. lr=0.003), e.g. `fast,lr=0.003,batch_size=128`."""
    config = setting.get("config", next(iter(configs)))
    parts = [str(config)] + [
        f"{key_label(k, setting)}={v:.4g}"
        if isinstance(v, float)
        else f"{key_label(k, setting)}={v}"
        for k, v in setting.items()
        if k != "config"
    ]
    return ",".join(parts).replace("/", "-").replace(" ", "")


def key_label(key: str, setting: dict[str, Any]) -> str:
    last = key.rsplit(".", 1)[-1]
    return last if sum(k.rsplit(".", 1)[-1] == last for k in setting) == 1 else key
