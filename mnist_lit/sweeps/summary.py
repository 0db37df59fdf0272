"""A sweep's summary: one row per setting with its seeds' mean ± std, 95% interval, min and max
of val/acc_best, test/acc and training seconds, best validation first, and each setting
compared with the first over the seeds both ran (significance.py); read from the study (so it
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
from mnist_lit.sweeps.significance import Comparison, interval, paired
from mnist_lit.sweeps.study import retried
from mnist_lit.tracking.metrics_file import normalize

STATS = ("mean", "std", "min", "max", "ci_low", "ci_high")
SELECTION = "val/acc_best"  # the figure that ranks and compares the settings
# metrics.json's figures, and their column titles
FIGURES = {"val/acc_best": "val/acc_best", "test/acc": "test/acc", "train_seconds": "training s"}
ACCURACIES = ("val/acc_best", "test/acc")  # their 95% intervals are in the Markdown table too


@dataclass
class Setting:
    label: str
    params: dict[str, Any]
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # by seed

    def values(self, figure: str) -> list[float]:
        return list(self.by_seed(figure).values())

    def by_seed(self, figure: str) -> dict[int, float]:
        return {seed: run[figure] for seed, run in self.runs.items() if run.get(figure) is not None}


@dataclass
class Summary:
    name: str
    settings: list[Setting]  # best mean val/acc_best first
    failed: list[str]  # "label seed: reason" of trials that failed for good
    unfinished: int  # trials waiting or running
    pruned: dict[str, tuple[int, str]] = field(default_factory=dict)  # label -> seeds, reason
    choose_anyway: bool = False  # choose among the finished settings despite failed trials

    @property
    def chosen(self) -> Setting | None:
        """The best setting; none while trials failed or are unfinished, unless asked: a winner
        among the survivors may only have survived."""
        if not self.settings or ((self.failed or self.unfinished) and not self.choose_anyway):
            return None
        return self.settings[0]

    def compared(self, setting: Setting) -> Comparison | None:
        """`setting` against the first (the chosen one, when chosen), paired by seed."""
        if setting is self.settings[0]:
            return None
        return paired(setting.by_seed(SELECTION), self.settings[0].by_seed(SELECTION))


def summarise(study: optuna.Study, choose_anyway: bool = False) -> Summary:
    configs = study.user_attrs["sweep"]["configs"]  # names the setting when only one config
    trials = study.get_trials(deepcopy=False)
    handed_back = retried(trials)
    settings: dict[str, Setting] = {}
    failed, unfinished, pruned = [], 0, {}
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
        elif trial.state == TrialState.PRUNED:  # its seeds so far: a search's own, a grid's
            seeds = sum(key.startswith("run/") for key in trial.user_attrs)  # ... in settings
            pruned[label] = (seeds, trial.user_attrs.get("pruned", "no reason recorded"))
        else:
            unfinished += 1
    for label, (seeds, reason) in pruned.items():
        pruned[label] = (len(settings.pop(label).runs) if label in settings else seeds, reason)
    ranked = sorted(settings.values(), key=lambda s: -mean(s.values(SELECTION)))
    return Summary(study.study_name, ranked, failed, unfinished, pruned, choose_anyway)


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(STATS)
    std = statistics.stdev(values) if len(values) > 1 else None  # sample std over seeds
    low, high = interval(values) or (None, None)
    figures = {"mean": mean(values), "std": std, "min": min(values), "max": max(values)}
    return {**figures, "ci_low": low, "ci_high": high}


def cell(figure: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if figure == "train_seconds" else f"{100 * value:.2f}"


def markdown(summary: Summary) -> str:
    header = ["setting", "seeds"]
    for figure, title in FIGURES.items():
        unit = "" if figure == "train_seconds" else " (%)"
        header += [f"{title}{unit} mean ± std", *(["95% CI"] * (figure in ACCURACIES))]
        header += ["min", "max"]
        if figure == SELECTION:
            header += [f"Δ {SELECTION} vs first (points) [95% CI]", "p (paired t)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for setting in summary.settings:
        mark = " ← chosen" if setting is summary.chosen else ""
        row = [f"`{setting.label}`{mark}", str(len(setting.runs))]
        for figure in FIGURES:
            s = stats(setting.values(figure))
            spread = f" ± {cell(figure, s['std'])}" if s["std"] is not None else ""
            row += [cell(figure, s["mean"]) + spread]
            if figure in ACCURACIES:
                row += [span(figure, s["ci_low"], s["ci_high"])]
            row += [cell(figure, s["min"]), cell(figure, s["max"])]
            if figure == SELECTION:
                row += comparison_cells(summary.compared(setting))
        lines.append("| " + " | ".join(row) + " |")
    # each note a paragraph of its own: Markdown joins consecutive lines into one
    return f"## Sweep {summary.name}\n\n" + "\n".join(lines) + "\n\n".join(notes(summary)) + "\n"


def span(figure: str, low: float | None, high: float | None) -> str:
    return "–" if low is None else f"{cell(figure, low)} – {cell(figure, high)}"


def comparison_cells(comparison: Comparison | None) -> list[str]:
    if comparison is None:
        return ["–", "–"]
    if comparison.difference is None:
        return ["no seed in common", "–"]
    points = f"{100 * comparison.difference:+.2f}"
    if comparison.interval is not None:
        low, high = (100 * bound for bound in comparison.interval)
        points += f" [{low:+.2f}, {high:+.2f}]" + (" tied" if comparison.tied else "")
    p = f"{comparison.p:.3f}" if comparison.p is not None else "–"
    seeds = f"{comparison.seeds} seed" + ("s" if comparison.seeds != 1 else "")
    return [f"{points}, {seeds}", p]


def notes(summary: Summary) -> list[str]:
    lines = [
        "",
        f"Chosen: the highest mean {SELECTION} (selection never looks at test/acc). 95% CI: "
        "t interval of the mean over seeds. Δ: each setting minus the first, paired by seed "
        "over the seeds both ran; tied: its interval contains 0, so these seeds cannot tell "
        "the two apart.",
    ]
    if summary.settings and summary.chosen is None:
        lines[1] = (
            "No setting chosen while trials failed or are unfinished: run the sweep again (a "
            "trial stopped or killed from outside resumes), or choose among the finished ones "
            "with `sweep --summary FOLDER --choose_anyway true`."
        )
    if summary.settings and all(len(s.runs) < 2 for s in summary.settings):
        lines.append("One seed per setting: no interval and no paired test; add seeds for them.")
    first, others = summary.settings[0] if summary.settings else None, summary.settings[1:]
    tied = [f"`{s.label}`" for s in others if summary.compared(s).tied]
    if summary.chosen is not None and tied:
        lines.append(
            f"Not told apart from the chosen one by these seeds: {', '.join(tied)}; "
            "more seeds may change the order."
        )
    for setting in others:
        shared = summary.compared(setting).seeds
        if shared < max(len(setting.runs), len(first.runs)):
            lines.append(
                f"`{setting.label}` ran {len(setting.runs)} seeds and `{first.label}` "
                f"{len(first.runs)}: compared over the {shared} both ran."
            )
    lines += [f"Pruned: `{k}` after {n} seeds: {why}" for k, (n, why) in summary.pruned.items()]
    lines += [f"Failed: {line}" for line in summary.failed]
    if summary.unfinished:
        lines.append(f"Not finished yet: {summary.unfinished} trials (waiting or running).")
    return lines


def csv_text(summary: Summary) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = [f"{f}_{s}" for f in FIGURES for s in STATS]
    paired_columns = ["seeds", "diff", "diff_low", "diff_high", "p", "tied"]
    paired_titles = [f"paired_{column}" for column in paired_columns]
    writer.writerow(["setting", "seeds", *columns, *paired_titles, "chosen"])
    for setting in summary.settings:
        figures = [stats(setting.values(f))[s] for f in FIGURES for s in STATS]
        comparison = summary.compared(setting)
        compared = [None] * len(paired_columns)
        if comparison is not None:
            low, high = comparison.interval or (None, None)
            compared = [comparison.seeds, comparison.difference, low, high, comparison.p]
            compared.append(comparison.tied)
        chosen = setting is summary.chosen
        writer.writerow([setting.label, len(setting.runs), *figures, *compared, chosen])
    return out.getvalue()


def write(summary: Summary, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "summary.md", folder / "summary.csv"]
    paths[0].write_text(markdown(summary))
    paths[1].write_text(csv_text(summary))
    return paths
