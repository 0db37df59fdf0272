"""Each setting's seeds as one curve with a band, in TensorBoard itself: a run SETTING/mean
beside the seeds with the mean of their validation accuracy and loss per epoch and the seeds'
min and max, and a Custom Scalars layout whose margin charts draw one band per setting, the
settings overlaid. Written at the end of a sweep and by `sweep --summary`, anew each time, so
that it follows the seeds as they finish. (TensorBoard cannot group runs into a band itself.)"""

import shutil
from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from mnist_lit.sweeps.trial import seed_folders
from mnist_lit.tracking.report import Run
from mnist_lit.tracking.runs import has_events, runs_below

MEAN_RUN = "mean"  # SETTING/mean, beside SETTING/seed_S
METRICS = {"val/acc": "seeds/val_acc", "val/loss": "seeds/val_loss"}  # -> their band's tags
STATISTICS = ("mean", "min", "max")
LAYOUT = {
    "seeds: mean and min-max band": {
        f"validation {metric.split('/')[1]}": ["Margin", [f"{tag}_{s}" for s in STATISTICS]]
        for metric, tag in METRICS.items()
    }
}


def sweep_runs(folder: Path) -> dict[str, list[Path]]:
    """Run folders by setting, for a sweep's layout SETTING/seed_S/version_N; empty otherwise."""
    runs: dict[str, list[Path]] = {}
    settings = sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []
    for setting in settings:
        for seeds in seed_folders(setting).values():
            if found := sorted(run for run in runs_below(seeds) if has_events(run)):
                runs.setdefault(setting.name, []).extend(found)
    return runs


def seed_curves(runs: list[Run], metric: str) -> np.ndarray:
    """The seeds' curves of `metric` as rows, over the epochs all of them reached (each run's
    events read once by the caller, for all the metrics it draws)."""
    curves = [run.at_epoch_ends(metric) for run in runs]
    epochs = min(len(curve) for curve in curves)
    return np.stack([curve[:epochs] for curve in curves])


def mean_curve(seed_folders: list[Path], metric: str = "val/acc") -> np.ndarray:
    """The mean of `metric` per epoch over the runs in `seed_folders` (a trial's seeds)."""
    runs = [Run(run) for seeds in seed_folders for run in runs_below(seeds) if has_events(run)]
    return seed_curves(runs, metric).mean(axis=0) if runs else np.empty(0)


def write_bands(folder: Path) -> list[Path]:
    """SETTING/mean for every setting of the sweep in `folder`; the runs written."""
    written = []
    for label, runs in sweep_runs(folder).items():
        output = folder / label / MEAN_RUN
        loaded = [Run(run) for run in runs]
        shutil.rmtree(output, ignore_errors=True)  # the seeds' present state, not appended
        with SummaryWriter(str(output)) as writer:
            writer.add_custom_scalars(LAYOUT)
            for metric, tag in METRICS.items():
                curves = seed_curves(loaded, metric)
                for statistic in STATISTICS:
                    values = getattr(curves, statistic)(axis=0)
                    for epoch, value in enumerate(values, start=1):
                        writer.add_scalar(f"{tag}_{statistic}", float(value), epoch)
            writer.add_text("seeds", ", ".join(f"`{run.relative_to(folder)}`" for run in runs))
        written.append(output)
    return written
