"""`mnist-lit report`: for a sweep's folder, each setting's validation curves by epoch
(settings may differ in batch size, so steps would not line up), the mean over its seeds as a
line and their range as a band; for runs, tracking/report.py's pictures."""

from pathlib import Path

import numpy as np
from jsonargparse import Namespace
from matplotlib.figure import Figure

from mnist_lit.sweeps.trial import SEED
from mnist_lit.tracking.report import Run, check_output, parser, save, whole_epochs
from mnist_lit.tracking.report import run as report_runs
from mnist_lit.tracking.runs import has_events, runs_below

__all__ = ["parser", "run"]  # the subcommand takes the runs' report's arguments


def run(options: Namespace) -> Path:
    if len(options.runs) == 1 and sweep_runs(Path(options.runs[0])):
        check_output(options.output)
        folder = Path(options.runs[0])
        path = save(sweep_figure(folder), options.output or folder / "report.png", options.dpi)
        print(f"Wrote {path}")
        return path
    return report_runs(options)


def sweep_runs(folder: Path) -> dict[str, list[Path]]:
    """Run folders by setting, for a sweep's layout SETTING/seed_S/version_N; empty otherwise."""
    runs: dict[str, list[Path]] = {}
    for seed in sorted(folder.glob(f"*/{SEED}*")):
        found = sorted(run for run in runs_below(seed) if has_events(run))
        if found:
            runs.setdefault(seed.parent.name, []).extend(found)
    return runs


def by_epoch(run, tag: str) -> np.ndarray:
    """The run's value of `tag` after each validated epoch (a resumed run's repeats dropped)."""
    steps, values = run.scalars(tag)
    _, first = np.unique(steps, return_index=True)
    return values[np.sort(first)]


def sweep_figure(folder: Path) -> Figure:
    settings = sweep_runs(folder)
    figure = Figure(figsize=(13, 5.5), layout="constrained")
    figure.suptitle(f"sweep {folder.name}: validation by epoch, mean over seeds (band: min-max)")
    for ax, metric in zip(figure.subplots(1, 2), ("acc", "loss")):
        for label, runs in settings.items():
            curves = [by_epoch(Run(run), f"val/{metric}") for run in runs]
            epochs = min(len(curve) for curve in curves)
            if not epochs:
                continue
            stacked = np.stack([curve[:epochs] for curve in curves])
            x = np.arange(1, epochs + 1)
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
