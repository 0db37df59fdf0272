"""Sweep studies without training: a grid stored in a SQLite study, and trials told figures."""

from pathlib import Path

import yaml
from optuna.trial import TrialState

from mnist_lit.sweeps import study as studies
from mnist_lit.sweeps.file import read_sweep_file
from mnist_lit.sweeps.storage import open_storage
from tests.helpers import REPO

FAST = str(REPO / "configs" / "fast.yaml")


def sweep_file(folder: Path, **content) -> Path:
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump({"configs": [FAST], **content}, sort_keys=False))
    return path


def grid_study(tmp_path: Path, lrs=(1e-3, 2e-3, 3e-3), seeds=(1, 2, 3, 4), storage="sqlite"):
    """A grid's study on SQLite, or on a journal file (`storage="journal"`)."""
    sweep = read_sweep_file(sweep_file(tmp_path, seeds=list(seeds), grid={"model.lr": list(lrs)}))
    url = (
        str(tmp_path / "grid.journal")
        if storage == "journal"
        else f"sqlite:///{tmp_path / 'optuna.db'}"
    )
    storage = open_storage(url)
    return sweep, url, storage, studies.open_study(storage, "grid", sweep, [])


def finish_trials(study, storage, figures: dict) -> None:
    """Finish the grid's trials with `figures`: (lr, seed) -> (val/acc_best, test/acc, training
    seconds); a trial without figures fails with a non-finite loss."""
    while (trial := studies.claim_waiting(study, storage)) is not None:
        key = (trial.params["model.lr"], trial.params["seed"])
        if key not in figures:
            trial.set_user_attr("error", "non-finite loss")
            study.tell(trial, state=TrialState.FAIL)
            continue
        val, test, seconds = figures[key]
        run = {"seed": key[1], "val/acc_best": val, "test/acc": test, "train_seconds": seconds}
        trial.set_user_attr(f"run/{key[1]}", run)
        study.tell(trial, val)
