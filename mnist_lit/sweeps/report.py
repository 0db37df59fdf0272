"""`mnist-lit report`: for a sweep's folder, each setting's validation curves by epoch
(settings may differ in batch size, so steps would not line up), the mean over its seeds as a
line and their range as a band; for runs, tracking/report.py's pictures."""

from pathlib import Path

import numpy as np
from jsonargparse import Namespace
from matplotlib.figure import Figure

from mnist_lit.sweeps.bands import seed_curves, sweep_runs
from mnist_lit.tracking.report import check_output, parser, save, whole_epochs
from mnist_lit.tracking.report import run as report_runs

__all__ = ["parser", "run"]  # the subcommand takes the runs' report's arguments


def run(options: Namespace) -> Path:
    if len(options.runs) == 1 and sweep_runs(Path(options.runs[0])):
        check_output(options.output)
        folder = Path(options.runs[0])
        path = save(sweep_figure(folder), options.output or folder / "report.png", options.dpi)
        print(f"Wrote {path}")
        return path
    return report_runs(options)


def sweep_figure(folder: Path) -> Figure:
    settings = sweep_runs(folder)
    figure = Figure(figsize=(13, 5.5), layout="constrained")
    figure.suptitle(f"sweep {folder.name}: validation by epoch, mean over seeds (band: min-max)")
    for ax, metric in zip(figure.subplots(1, 2), ("acc", "loss")):
        for label, runs in settings.items():
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
