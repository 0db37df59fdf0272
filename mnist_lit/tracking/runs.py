"""A run's folder: the one place that decides where each command writes and knows what lies in
a run, for every writer and reader (fit, resume, validate/test/predict, report, export, the
demo, DigitReader, sweeps).

    SAVE_DIR/lightning_logs/version_N/    a training run, claimed for it alone (RunLogger)
        config.yaml  metrics.json  events.out.tfevents.*  report.png
        checkpoints/best.ckpt  checkpoints/last.ckpt
        validate/  test/  predict/        evaluations of its checkpoints, with their own events

SAVE_DIR is --trainer.logger.init_args.save_dir, else --trainer.default_root_dir, else `.`.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from jsonargparse import Namespace
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from mnist_lit.tracking.folders import check_writable
from mnist_lit.tracking.tensorboard import tensorboard_tag

RUNS = "lightning_logs"  # the logger's default `name`: the folder of the run folders
VERSION = "version_"
CHECKPOINTS = "checkpoints"
CONFIG = "config.yaml"
METRICS = "metrics.json"
EVENTS = "events.out.tfevents.*"


def checkpoint_path(run: Path, name: str = "best") -> Path:
    """A run's `best` or `last` checkpoint."""
    return Path(run) / CHECKPOINTS / f"{name}.ckpt"


def metrics_path(run: Path) -> Path:
    return Path(run) / METRICS


def runs_below(root: Path) -> list[Path]:
    """The run folders (version_N) directly below `root`."""
    return [path for path in Path(root).glob(f"{VERSION}*") if path.is_dir()]


def newest(paths: list[Path]) -> Path | None:
    """The most recently written of `paths` that exist."""
    existing = [path for path in paths if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime) if existing else None


def newest_checkpoint(root: Path, name: str) -> Path | None:
    """The newest `name` checkpoint (best, last) of the runs below `root`."""
    return newest([checkpoint_path(run, name) for run in runs_below(root)])


def run_of(ckpt_path: str | Path) -> Path | None:
    """The run folder a checkpoint was written in, when it lies in that run's checkpoints/."""
    folder = Path(ckpt_path).resolve().parent
    run = folder.parent
    return run if folder.name == CHECKPOINTS and (run / CONFIG).is_file() else None


def recorded_config(run: Path) -> dict:
    """The run's config.yaml as YAML, or {} where it cannot be read."""
    try:
        content = yaml.safe_load((Path(run) / CONFIG).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return content if isinstance(content, dict) else {}


def folders_with_events(root: Path) -> set[Path]:
    """Every folder below `root`, itself included, that holds TensorBoard events."""
    return {events.parent for events in Path(root).rglob(EVENTS)}


def has_events(folder: Path) -> bool:
    return any(Path(folder).glob(EVENTS))


def is_training_run(folder: Path) -> bool:
    """A run of `fit`: evaluations (`validate`, `test`, `predict`) have no checkpoints."""
    return (Path(folder) / CHECKPOINTS).is_dir()


def run_folder(trainer: L.Trainer) -> Path:
    """The run's log folder. Under DDP, `trainer.log_dir` is a broadcast from rank 0, so every
    process must ask for it, not only the one that writes."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def claim_version(root: Path) -> int:
    """The next free version_N below `root`, created here: mkdir fails for all but one of the
    processes that try the same N, so runs started together each get their own folder."""
    check_writable(root, "--trainer.logger.init_args.save_dir")
    root.mkdir(parents=True, exist_ok=True)
    numbers = [path.name.removeprefix(VERSION) for path in runs_below(root)]
    version = max((int(n) for n in numbers if n.isdigit()), default=-1) + 1
    while True:
        try:
            (root / f"{VERSION}{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


class RunLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger, whose version_N folder is claimed when it is first named.
    Lightning's own logger takes "the highest N + 1" without claiming it, and two runs started
    together in one folder write into the same one. It writes the module's metrics under their
    TensorBoard tags (tensorboard.TENSORBOARD_TAGS) and leaves out Lightning's `epoch` scalar."""

    def __init__(self, save_dir: str | None = None, **kwargs: Any) -> None:
        """Args:
        save_dir: Folder of the run folders' parent (`name`); the trainer's default_root_dir
            when not given.
        """
        super().__init__(save_dir or ".", **kwargs)
        self.claimed: int | str | None = kwargs.get("version")
        self.made: list[Path] = []  # the folders claiming made, deepest first

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        # Lightning adds the epoch to every write: a chart of a counter, first in TensorBoard
        tagged = {tensorboard_tag(k): v for k, v in metrics.items() if k != "epoch"}
        super().log_metrics(tagged, step)

    @property
    def version(self) -> int | str:
        if self.claimed is None:
            # Only rank 0 names the run: the others are told its folder (trainer.log_dir)
            if rank_zero_only.rank != 0:
                return super().version
            root = Path(self.root_dir)
            self.made = [folder for folder in (root, *root.parents) if not folder.exists()]
            self.claimed = claim_version(root)
            self.made.insert(0, root / f"{VERSION}{self.claimed}")
        return self.claimed

    def discard_if_empty(self) -> None:
        """Remove the run folder this logger claimed, and the folders made for it, while they
        are empty: a command that failed before writing anything leaves nothing behind."""
        for folder in self.made:
            with suppress(OSError):  # not empty (or gone): kept, and so are those above it
                folder.rmdir()


@contextmanager
def no_empty_run_left(trainer: L.Trainer) -> Iterator[None]:
    """A command that fails before its run holds anything (MNIST missing, say) removes the run
    folder it claimed: the next run is not version_1 beside an empty version_0."""
    try:
        yield
    except BaseException:
        if isinstance(trainer.logger, RunLogger):
            trainer.logger.discard_if_empty()
        raise


def place_logs(config: Namespace) -> None:
    """The logger writes below --trainer.default_root_dir unless given its own save_dir."""
    logger = config.trainer.get("logger")
    if isinstance(logger, Namespace) and logger.init_args.get("save_dir", ".") is None:
        logger.init_args.save_dir = config.trainer.get("default_root_dir") or "."


def place_evaluation_logs(subcommand: str, config: Namespace, run: Path | None) -> None:
    """`validate`, `test` and `predict` write into the run whose checkpoint they evaluate, in a
    folder named after the subcommand (`version_N/test/`; `test_tta/` for `test --tta`), or
    below `lightning_logs/test/` for a checkpoint from elsewhere: never as a version_N of their
    own, which TensorBoard, `report` and `--ckpt_path last` would take for a training run. A
    logger given its own `version` (or any other folder scheme of the user's) is left as it
    is."""
    logger = config.trainer.get("logger")
    if not isinstance(logger, Namespace) or "name" not in logger.init_args:
        return
    arguments = logger.init_args
    if arguments.get("version") is not None:
        return
    if subcommand == "test" and config.get("tta"):  # never mistaken for the plain test figure
        subcommand = "test_tta"
    if run is not None:
        if run.is_relative_to(Path.cwd()):  # said as the user would type it
            run = run.relative_to(Path.cwd())
        arguments.save_dir, arguments.name, arguments.version = str(run), subcommand, ""
    else:
        arguments.name = f"{arguments.get('name') or RUNS}/{subcommand}"


def continue_run(config: Namespace, run: Path) -> None:
    """A resumed run goes on in its own folder (one run, one record), unless the user sent its
    checkpoints elsewhere."""
    logger = config.trainer.get("logger")
    if isinstance(logger, Namespace) and not config.checkpoint.get("dirpath"):
        arguments = logger.init_args
        arguments.save_dir, arguments.name = str(run.parents[1]), run.parent.name
        arguments.version = run.name


def log_root(config: Namespace) -> Path:
    """Where this run's TensorBoard logger puts its version_N folders."""
    logger = config.trainer.get("logger")
    arguments = getattr(logger, "init_args", None) or {}
    save_dir = arguments.get("save_dir") or config.trainer.get("default_root_dir") or "."
    return Path(save_dir) / (arguments.get("name") or RUNS)


def checkpoint_finder(config: Namespace) -> tuple[str, Callable[[str], Path | None]]:
    """Where this command's checkpoints go, in words, and a function that finds the newest
    `best` or `last` there: --checkpoint.dirpath, else the runs below the logger's folder, else
    default_root_dir/checkpoints (no logger)."""
    if config.checkpoint.get("dirpath"):
        folder = Path(config.checkpoint.dirpath)
    elif config.trainer.get("logger"):
        root = log_root(config)
        return str(root / f"{VERSION}*" / CHECKPOINTS), lambda name: newest_checkpoint(root, name)
    else:
        folder = Path(config.trainer.get("default_root_dir") or ".") / CHECKPOINTS
    return str(folder), lambda name: newest([folder / f"{name}.ckpt"])
