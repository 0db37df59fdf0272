"""`mnist-lit report RUN [RUN ...]`: one PNG of a run's curves and pictures, read from its
TensorBoard event files; with several runs, their validation curves on one plot; for a sweep's
folder, each setting's validation curves over its seeds."""

import io
import os
from pathlib import Path

import matplotlib.image
import numpy as np
from jsonargparse import ArgumentParser, Namespace
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.errors import UserError
from mnist_lit.tracking.folders import check_writable
from mnist_lit.tracking.metrics_file import read_metrics
from mnist_lit.tracking.runs import EVENTS, folders_with_events, has_events, is_training_run
from mnist_lit.tracking.tensorboard import tensorboard_tag

FORMATS = (".png", ".pdf", ".svg")


class ReportError(UserError, ValueError):
    """A run folder is missing or holds no TensorBoard events."""


def find_run(path: Path) -> Path:
    """A run folder itself, or the newest training run below a parent such as lightning_logs/
    (evaluation runs of `test`, `validate` and `predict` have no checkpoints of their own)."""
    if not path.is_dir():
        raise ReportError(f"{path} is not a folder; pass a run such as lightning_logs/version_0")
    if has_events(path):
        return path
    runs = folders_with_events(path)
    if not runs:
        raise ReportError(f"{path} holds no TensorBoard event files; train with `fit` first")
    trained = [run for run in runs if is_training_run(run)]
    if not trained:
        raise ReportError(f"{path} holds no training run (only evaluations); pass a run folder")
    return max(trained, key=lambda run: max(e.stat().st_mtime for e in run.glob(EVENTS)))


class Run:
    """The scalars and images TensorBoard's own reader finds in one run folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = f"{folder.parent.name}/{folder.name}"
        self.events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 1})
        self.events.Reload()
        self.tags = self.events.Tags()

    def scalars(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values of a metric the module logs, under its TensorBoard tag (or its own
        name, in runs written before the tags were renamed)."""
        written = self.tags["scalars"]
        tag = next((t for t in (tensorboard_tag(metric), metric) if t in written), None)
        if tag is None:
            return np.empty(0), np.empty(0)
        events = self.events.Scalars(tag)
        return np.array([e.step for e in events]), np.array([e.value for e in events])

    def at_epoch_ends(self, metric: str) -> np.ndarray:
        """A validation metric's value at the end of each validated epoch: validations within an
        epoch (`--trainer.val_check_interval` under 1) and a resumed run's repeats left out."""
        steps, values = self.scalars(metric)
        _, first = np.unique(steps, return_index=True)  # a resumed run repeats steps
        steps, values = steps[np.sort(first)], values[np.sort(first)]
        ends = self.scalars("train/loss_epoch")[0]  # logged once, at each epoch's last step
        return values[np.isin(steps, ends)] if len(ends) else values

    def last(self, metric: str) -> float | None:
        values = self.scalars(metric)[1]
        return float(values[-1]) if len(values) else None

    def image(self, *tags: str) -> np.ndarray | None:
        """The newest picture under the first of `tags` that the run logged."""
        for tag in tags:
            if tag in self.tags["images"]:
                png = self.events.Images(tag)[-1].encoded_image_string
                return matplotlib.image.imread(io.BytesIO(png), format="png")
        return None

    def train_seconds(self) -> float | None:
        """From metrics.json, written by the run when it finished fitting (if it did, and the
        file is whole)."""
        seconds = read_metrics(self.folder).get("train_seconds")
        return seconds if isinstance(seconds, int | float) else None

    def headline(self) -> str:
        figures = [("test acc", "test/acc"), ("best val acc", "val/acc_best")]
        parts = [f"{label} {value:.2%}" for label, tag in figures if (value := self.last(tag))]
        if epochs := len(self.at_epoch_ends("val/acc")):
            parts.append(f"{epochs} validated epoch{'s' if epochs > 1 else ''}")
        if (validations := len(np.unique(self.scalars("val/acc")[0]))) > epochs:
            parts[-1] += f" ({validations} validations)"
        if seconds := self.train_seconds():
            parts.append(f"{seconds:.0f} s training")
        return f"{self.name}: " + (", ".join(parts) or "no evaluation yet")


def smooth(values: np.ndarray, weight: float = 0.9) -> np.ndarray:
    """TensorBoard-style exponential moving average, debiased at the start."""
    smoothed, average = np.empty_like(values, dtype=float), 0.0
    for index, value in enumerate(values):
        average = weight * average + (1 - weight) * value
        smoothed[index] = average / (1 - weight ** (index + 1))
    return smoothed


LABELS = {"loss": "cross-entropy loss", "acc": "accuracy"}


def plot_curves(ax, run: Run, metric: str) -> None:
    steps, values = run.scalars(f"train/{metric}_step")
    smoothed = smooth(values)
    if len(values):  # single batches scatter too much to read; TensorBoard has them
        ax.plot(steps, smoothed, color="#2171b5", label="training (smoothed over batches)")
    val_steps, val_values = run.scalars(f"val/{metric}")
    if len(val_values):
        ax.plot(val_steps, val_values, "o-", color="#d94801", label="validation")
    ax.set(xlabel="training step", ylabel=LABELS[metric], title=LABELS[metric])
    shown = np.concatenate([smoothed, val_values])
    positive = shown[shown > 0]  # a loss of exactly 0 has no place on a log scale
    if metric == "loss" and len(positive):
        ax.set_yscale("log")  # late epochs differ in the second digit
        ax.set_ylim(positive.min() / 2, positive.max() * 1.5)
    if metric == "acc" and len(shown):
        # zoom on where training spends its time, not on the first few steps
        ax.set_ylim(max(0.0, np.percentile(shown, 5) - 0.01), 1.0)
    ax.grid(alpha=0.3)
    # the curves fall from the top left (loss) or rise to the top (accuracy)
    ax.legend(fontsize=9, loc="upper right" if metric == "loss" else "lower right")


def single_run_figure(run: Run) -> Figure:
    figure = Figure(figsize=(13, 11), layout="constrained")
    figure.suptitle(run.headline(), fontsize=13)
    top, bottom = figure.subfigures(2, 1, height_ratios=[1, 1.25])
    loss_ax, acc_ax = top.subplots(1, 2)
    plot_curves(loss_ax, run, "loss")
    plot_curves(acc_ax, run, "acc")
    pictures = (  # the mistakes say more than 32 digits that are all right
        ("test/worst_mistakes", "test/predictions", "val/worst_mistakes", "val/predictions"),
        ("test/confusion_matrix", "val/confusion_matrix"),
    )
    for ax, tags in zip(bottom.subplots(1, 2, width_ratios=[1.45, 1]), pictures):
        ax.set_axis_off()
        picture = run.image(*tags)
        if picture is not None:
            ax.imshow(picture)
    return figure


def whole_epochs(ax: Axes) -> None:
    """Ticks at whole epochs: 1, 2, 3, not 0.96 to 1.04 around a one-epoch run's point."""
    # a single tick is enough: with the default two, one point falls back to fractional ticks
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def comparison_figure(runs: list[Run]) -> Figure:
    figure = Figure(figsize=(13, 5.5), layout="constrained")
    figure.suptitle("\n".join(run.headline() for run in runs), fontsize=11)
    for ax, metric in zip(figure.subplots(1, 2), ("loss", "acc")):
        for run in runs:
            # against epochs, not steps: runs with other batch sizes take other step counts
            values = run.at_epoch_ends(f"val/{metric}")
            ax.plot(np.arange(1, len(values) + 1), values, "o-", markersize=3, label=run.name)
        title = f"validation {LABELS[metric]}"
        ax.set(xlabel="epoch", ylabel=title, title=title)
        whole_epochs(ax)
        if metric == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right" if metric == "loss" else "lower right")
    return figure


def name_runs(runs: list[Run]) -> None:
    """Names that tell the runs apart: their paths below the folder they share."""
    common = Path(os.path.commonpath([run.folder.resolve() for run in runs]))
    for run in runs:
        run.name = str(run.folder.resolve().relative_to(common)) or run.name


def check_output(output: Path | None) -> None:
    """A picture's name and folder, checked before reading and drawing, not after."""
    if output is not None and Path(output).suffix.lower() not in FORMATS:
        raise ReportError(f"--output {output}: the picture must end in one of {FORMATS}")
    if output is not None:
        check_writable(Path(output).parent, "--output")


def save(figure: Figure, output: Path, dpi: int) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=dpi)
    return output


def report(paths: list[Path], output: Path | None = None, dpi: int = 150) -> Path:
    """Draw one report picture and return its path (default: report.png in the first run
    folder); a .pdf or .svg output is drawn as vectors."""
    check_output(output)
    runs = [Run(find_run(Path(path))) for path in paths]
    if not any(run.tags["scalars"] for run in runs):
        raise ReportError(f"{runs[0].folder} has no curves yet: nothing to draw")
    if len(runs) > 1:
        name_runs(runs)
    figure = single_run_figure(runs[0]) if len(runs) == 1 else comparison_figure(runs)
    return save(figure, Path(output) if output else runs[0].folder / "report.png", dpi)


def parser() -> ArgumentParser:
    parser = ArgumentParser(prog="mnist-lit report", description=__doc__)
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        help="run folders, lightning_logs/, a sweep's folder, or its settings' folders to compare",
    )
    parser.add_argument(
        "--output", type=Path | None, help="picture: .png, .pdf or .svg (default: RUN/report.png)"
    )
    parser.add_argument("--dpi", type=int, default=150, help="resolution of a PNG")
    return parser


def run(options: Namespace) -> Path:
    path = report(options.runs, options.output, options.dpi)
    print(f"Wrote {path}")
    return path
