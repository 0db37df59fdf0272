"""`mnist-lit report`: for a sweep's folder, each setting's validation curves by epoch
(settings may differ in batch size, so steps would not line up), the mean over its seeds as a
line and their range as a band; for two or more settings' folders (of one sweep or several),
the same picture of them and each compared with the first over their shared seeds; for runs,
tracking/report.py's pictures."""

from pathlib import Path

import numpy as np
from jsonargparse import Namespace
from matplotlib.figure import Figure

from mnist_lit.sweeps.bands import seed_curves, sweep_runs
from mnist_lit.sweeps.significance import Comparison, paired
from mnist_lit.sweeps.trial import seed_folders
from mnist_lit.tracking.metrics_file import read_metrics
from mnist_lit.tracking.report import Run, check_output, parser, save, whole_epochs
from mnist_lit.tracking.report import run as report_runs
from mnist_lit.tracking.runs import metrics_path, newest, runs_below

__all__ = ["parser", "run"]  # the subcommand takes the runs' report's arguments


def run(options: Namespace) -> Path:
    folders = [Path(path) for path in options.runs]
    if len(folders) == 1 and (settings := sweep_runs(folders[0])):
        title = f"sweep {folders[0].name}"
        output = options.output or folders[0] / "report.png"
    elif len(folders) > 1 and all(seed_runs(folder) for folder in folders):
        settings = compare(folders)
        title = f"{len(settings)} settings compared"
        output = options.output or folders[0] / "compare.png"
    else:
        return report_runs(options)
    check_output(options.output)
    path = save(bands_figure(settings, title), output, options.dpi)
    print(f"Wrote {path}")
    return path


def seed_runs(setting: Path) -> dict[int, Path]:
    """A setting's folder's finished runs by seed (SETTING/seed_S/version_N with metrics.json)."""
    found = {}
    for seed, seeds in seed_folders(setting).items():
        if finished := newest([metrics_path(run) for run in runs_below(seeds)]):
            found[seed] = finished.parent
    return found


def compare(folders: list[Path]) -> dict[str, list[Path]]:
    """Print each setting against the first, paired by seed; their runs by label."""
    names = [folder.name for folder in folders]
    labels = [f.name if names.count(f.name) == 1 else f"{f.parent.name}/{f.name}" for f in folders]
    runs = {label: seed_runs(folder) for label, folder in zip(labels, folders)}
    figures = {
        label: {seed: read_metrics(run) for seed, run in by_seed.items()}
        for label, by_seed in runs.items()
    }
    first = labels[0]
    for label in labels[1:]:
        print(f"{label} vs {first}:")
        for figure in ("val/acc_best", "test/acc"):
            values = [
                {s: m[figure] for s, m in figures[name].items() if m.get(figure) is not None}
                for name in (label, first)
            ]
            print(f"  {figure}: {describe(paired(*values))}")
    return {label: list(by_seed.values()) for label, by_seed in runs.items()}


def describe(comparison: Comparison) -> str:
    if comparison.difference is None:
        return "no seed in common"
    text = f"{100 * comparison.difference:+.2f} points"
    if comparison.interval is None:
        return f"{text} on 1 shared seed: no interval"
    low, high = (100 * bound for bound in comparison.interval)
    p = f", p = {comparison.p:.3f}" if comparison.p is not None else ""
    verdict = "not told apart" if comparison.tied else "a real difference"
    seeds = f"paired t over {comparison.seeds} shared seeds"
    return f"{text} [95% CI {low:+.2f}, {high:+.2f}]{p} ({seeds}): {verdict}"


def bands_figure(settings: dict[str, list[Path]], title: str) -> Figure:
    figure = Figure(figsize=(13, 5.5), layout="constrained")
    figure.suptitle(f"{title}: validation by epoch, mean over seeds (band: min-max)")
    loaded = {label: [Run(run) for run in runs] for label, runs in settings.items()}
    for ax, metric in zip(figure.subplots(1, 2), ("acc", "loss")):
        for label, runs in loaded.items():
            stacked = seed_curves(runs, f"val/{metric}")
            if not stacked.shape[1]:
                continue
            x = np.arange(1, stacked.shape[1] + 1)
            (line,) = ax.plot(
                x, stacked.mean(0), "o-", markersize=3, label=f"{label} (n={len(runs)})"
            )
            ax.fill_between(x, stacked.min(0), stacked.max(0), color=line.get_color(), alpha=0.2)
        ax.set(xlabel="epoch", ylabel=f"validation {metric}", title=f"val/{metric}")
        whole_epochs(ax)
        if metric == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure
