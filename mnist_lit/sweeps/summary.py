"""A sweep's summary: one row per setting with its seeds' mean ± std, min and max of
val/acc_best, test/acc and training seconds, best validation first, read from the study (so it
needs no access to other machines' run folders), as Markdown and CSV."""

import csv
import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from mnist_lit.sweeps.file import setting_label
from mnist_lit.sweeps.study import retried
from mnist_lit.tracking.metrics_file import normalize

STATS = ("mean", "std", "min", "max")
# metrics.json's figures, and their column titles
FIGURES = {"val/acc_best": "val/acc_best", "test/acc": "test/acc", "train_seconds": "training s"}


@dataclass
class Setting:
    label: str
    params: dict[str, Any]
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # by seed

    def values(self, figure: str) -> list[float]:
        return [run[figure] for run in self.runs.values() if run.get(figure) is not None]


@dataclass
class Summary:
    name: str
    settings: list[Setting]  # best mean val/acc_best first
    failed: list[str]  # "label seed: reason" of trials that failed for good
    unfinished: int  # trials waiting or running
    choose_anyway: bool = False  # choose among the finished settings despite failed trials

    @property
    def chosen(self) -> Setting | None:
        """The best setting; none while trials failed or are unfinished, unless asked: a winner
        among the survivors may only have survived."""
        if not self.settings or ((self.failed or self.unfinished) and not self.choose_anyway):
            return None
        return self.settings[0]


def summarise(study: optuna.Study, choose_anyway: bool = False) -> Summary:
    configs = study.user_attrs["sweep"]["configs"]  # names the setting when only one config
    trials = study.get_trials(deepcopy=False)
    handed_back = retried(trials)
    settings: dict[str, Setting] = {}
    failed, unfinished = [], 0
    for trial in trials:
        if trial.number in handed_back:
            continue  # a copy of it carries on
        params = {k: v for k, v in trial.params.items() if k != "seed"}
        label = setting_label(params, configs)
        if trial.state == TrialState.COMPLETE:
            setting = settings.setdefault(label, Setting(label, params))
            for key, run in trial.user_attrs.items():
                if key.startswith("run/"):
                    # one run per seed, however often retried
                    setting.runs[run["seed"]] = normalize(run)
        elif trial.state == TrialState.FAIL:
            seed = f" seed {trial.params['seed']}" if "seed" in trial.params else ""
            failed.append(f"{label}{seed}: {trial.user_attrs.get('error', 'no reason recorded')}")
        elif trial.state != TrialState.PRUNED:
            unfinished += 1
    ranked = sorted(settings.values(), key=lambda s: -mean(s.values("val/acc_best")))
    return Summary(study.study_name, ranked, failed, unfinished, choose_anyway)


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(STATS)
    std = statistics.stdev(values) if len(values) > 1 else None  # sample std over seeds
    return {"mean": mean(values), "std": std, "min": min(values), "max": max(values)}


def cell(figure: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if figure == "train_seconds" else f"{100 * value:.2f}"


def markdown(summary: Summary) -> str:
    header = ["setting", "seeds"]
    for figure, title in FIGURES.items():
        unit = "" if figure == "train_seconds" else " (%)"
        header += [f"{title}{unit} mean ± std", "min", "max"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for setting in summary.settings:
        mark = " ← chosen" if setting is summary.chosen else ""
        row = [f"`{setting.label}`{mark}", str(len(setting.runs))]
        for figure in FIGURES:
            s = stats(setting.values(figure))
            spread = f" ± {cell(figure, s['std'])}" if s["std"] is not None else ""
            row += [cell(figure, s["mean"]) + spread]
            row += [cell(figure, s["min"]), cell(figure, s["max"])]
        lines.append("| " + " | ".join(row) + " |")
    notes = ["", "Chosen: the highest mean val/acc_best (selection never looks at test/acc)."]
    if summary.settings and summary.chosen is None:
        notes[1] = (
            "No setting chosen while trials failed or are unfinished: run the sweep again (a "
            "trial stopped or killed from outside resumes), or choose among the finished ones "
            "with `sweep --summary FOLDER --choose_anyway true`."
        )
    notes += [f"Failed: {line}" for line in summary.failed]
    if summary.unfinished:
        notes.append(f"Not finished yet: {summary.unfinished} trials (waiting or running).")
    return f"## Sweep {summary.name}\n\n" + "\n".join(lines + notes) + "\n"


def csv_text(summary: Summary) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = [f"{f}_{s}" for f in FIGURES for s in STATS]
    writer.writerow(["setting", "seeds", *columns, "chosen"])
    for setting in summary.settings:
        figures = [stats(setting.values(f))[s] for f in FIGURES for s in STATS]
        writer.writerow([setting.label, len(setting.runs), *figures, setting is summary.chosen])
    return out.getvalue()


def write(summary: Summary, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "summary.md", folder / "summary.csv"]
    paths[0].write_text(markdown(summary))
    paths[1].write_text(csv_text(summary))
    return paths
