"""`mnist-lit sweep SWEEP_FILE [--storage URL] [--name NAME] [any fit flag ...]`: many `fit`s
from one sweep file (configs/sweeps/), a grid or an Optuna search with each setting repeated
over seeds, recorded in an Optuna study and summarised; started again, it carries on where it
stopped. Start the same command several times (one per GPU, or per machine with a shared
--storage) and the workers share the trials out. `--summary FOLDER` prints a sweep's table."""

import time
from pathlib import Path

import optuna
from jsonargparse import ArgumentParser, Namespace
from optuna.trial import TrialState

from mnist_lit.errors import UserError
from mnist_lit.sweeps import study as studies
from mnist_lit.sweeps import summary as sweep_summary
from mnist_lit.sweeps.bands import mean_curve, write_bands
from mnist_lit.sweeps.file import (
    SweepFileError,
    read_sweep_file,
    setting_label,
)
from mnist_lit.sweeps.flags import check_flags, check_trial_flags, common_flags
from mnist_lit.sweeps.hparams import write_experiment
from mnist_lit.sweeps.pruning import prune_reason
from mnist_lit.sweeps.storage import open_storage, storage_errors
from mnist_lit.sweeps.summary import SELECTION
from mnist_lit.sweeps.trial import fit_command, fit_log, run_fit, seed_folder
from mnist_lit.tracking.folders import check_writable
from mnist_lit.tracking.metrics_file import normalize

KILL_RETRIES = 2  # a trial whose fit is killed from outside is tried this many more times
# a worker with nothing left to start looks this often whether the others' trials finished (it
# then ends) or were lost (it takes them over); a look is one small query
POLL_SECONDS = 2
OWN_OPTIONS = ("--storage", "--name", "--root", "--summary", "--choose_anyway")


def parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="mnist-lit sweep",
        description=__doc__,
        epilog="Every other flag (e.g. --data.data_dir ../shared/data, or --config "
        "configs/dry_run.yaml for a dry run) is passed to every trial's `fit`, after its config.",
    )
    parser.add_argument("sweep_file", type=Path | None, nargs="?", help="configs/sweeps/*.yaml")
    parser.add_argument("--name", type=str | None, help="the sweep's name (default: file stem)")
    parser.add_argument("--root", type=Path, default=Path("sweeps"),
                        help="the sweep's folder is ROOT/NAME")  # fmt: skip
    parser.add_argument(
        "--storage", type=str | None,
        help="Optuna storage URL shared by the workers (default: sqlite:///ROOT/NAME/optuna.db), "
        "e.g. postgresql://user:password@host/database",
    )  # fmt: skip
    parser.add_argument(
        "--summary", type=str | None, help="print the summary of this sweep folder and stop"
    )
    parser.add_argument(
        "--choose_anyway", type=bool, default=False,
        help="mark the best finished setting chosen although trials failed or are unfinished",
    )  # fmt: skip
    return parser


def parse(argv: list[str]) -> Namespace:
    """The sweep's own options; every other flag is kept, in order, for the trials."""
    own, trial_flags, tokens = [], [], list(argv)
    while tokens:
        token = tokens.pop(0)
        has_value = "=" not in token and bool(tokens) and not tokens[0].startswith("--")
        is_own = token.split("=")[0] in OWN_OPTIONS
        if is_own or not token.startswith("--") or token == "--help":
            own += [token] + ([tokens.pop(0)] if is_own and has_value else [])
        else:
            trial_flags += [token] + ([tokens.pop(0)] if has_value else [])
    options = parser().parse_args(own)
    options.trial_flags = trial_flags
    return options


def run(options: Namespace) -> Path:
    if options.summary:
        return print_summary(options)
    if options.sweep_file is None:
        raise SweepFileError("no sweep file; e.g. mnist-lit sweep configs/sweeps/seeds.yaml")
    sweep = read_sweep_file(options.sweep_file)
    check_flags(sweep, options.trial_flags)
    resolved = check_trial_flags(sweep, options.trial_flags)
    name = options.name or sweep.path.stem
    folder = options.root / name
    check_writable(folder, "--root")
    folder.mkdir(parents=True, exist_ok=True)
    url = options.storage or f"sqlite:///{(folder / 'optuna.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints its own progress
    with storage_errors(url):
        storage = open_storage(url)
        study = studies.open_study(storage, name, sweep, common_flags(options.trial_flags))
        studies.claim_folder(folder, study)
        write_experiment(folder, sweep, resolved)
        status = Worker(sweep, study, storage, folder, options.trial_flags).work()
        summary = sweep_summary.summarise(study, options.choose_anyway)
        study.set_user_attr("summary", sweep_summary.markdown(summary))  # for optuna-dashboard
    print(sweep_summary.markdown(summary))
    print("Wrote " + ", ".join(map(str, sweep_summary.write(summary, folder))))
    print_tensorboard(folder)
    if status or summary.failed:
        raise SystemExit(status or 1)
    return folder


def print_summary(options: Namespace) -> Path:
    folder = Path(options.summary)
    url = options.storage or f"sqlite:///{(folder / 'optuna.db').resolve()}"
    if not options.storage and not (folder / "optuna.db").is_file():
        raise UserError(f"--summary {folder}: no optuna.db there; pass a sweep folder")
    storage = open_storage(url)
    names = optuna.study.get_all_study_names(storage)
    name = options.name or (names[0] if len(names) == 1 else None)
    if name not in names:
        raise UserError(f"--summary: choose the sweep with --name, one of {names}")
    study = optuna.load_study(study_name=name, storage=storage)
    summary = sweep_summary.summarise(study, options.choose_anyway)
    print(sweep_summary.markdown(summary))
    print_tensorboard(folder)
    return folder


def print_tensorboard(folder: Path) -> None:
    """Each setting's seeds as a mean with a band (SETTING/mean runs), and where to see them."""
    try:
        written = write_bands(folder)
    except OSError as error:  # a folder this user may read but not write (--summary)
        print(f"TensorBoard: tensorboard --logdir {folder} (no bands: {error})")
        return
    if written:
        print(f"TensorBoard: tensorboard --logdir {folder} (Custom Scalars: each setting's band)")


class Worker:
    """Takes trials from the study one at a time until none is left to run or to wait for."""

    def __init__(self, sweep, study, storage, folder: Path, flags: list[str]) -> None:
        self.sweep, self.study, self.storage = sweep, study, storage
        self.folder, self.flags = folder, flags
        self.total = sweep.trials or len(sweep.grid_settings()) * len(sweep.seeds)

    def next_trial(self) -> optuna.Trial | None:
        trial = studies.claim_waiting(self.study, self.storage)
        searching = trial is None and self.sweep.is_search
        if searching and studies.settings_started(self.study) < self.sweep.trials:
            trial = studies.ask_new(self.study, self.storage, self.sweep)
        return trial

    def work(self) -> int:
        """0 when the sweep is finished; 128 + the signal when one stopped it."""
        while True:
            studies.recover_lost(self.study, self.storage)
            trial = self.next_trial()
            if trial is not None:
                if stopped_by := self.run_trial(trial):
                    return 128 + stopped_by
            elif self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                time.sleep(POLL_SECONDS)  # others' trials: finish them if lost
            else:
                return 0

    def run_trial(self, trial: optuna.Trial) -> int | None:
        """Run each seed of the trial not finished by an earlier attempt; the signal that
        stopped the sweep, if one did."""
        params = trial.params
        setting = {k: v for k, v in params.items() if k != "seed"}
        label = setting_label(setting, self.sweep.configs)
        config = self.sweep.configs[setting.get("config", next(iter(self.sweep.configs)))]
        folder = self.folder / (
            label if not self.sweep.is_search else f"trial_{first_attempt(trial)}"
        )
        seeds = [params["seed"]] if "seed" in params else self.sweep.seeds
        for seed in seeds:
            if f"run/{seed}" in trial.user_attrs:
                continue  # finished before this trial was handed back
            if reason := self.pruning(trial, label):
                print(f"[{self.study.study_name}] {label}: pruned, {reason}")
                trial.set_user_attr("pruned", reason)
                self.study.tell(trial, state=TrialState.PRUNED)
                return None
            seed_runs = seed_folder(folder, seed)
            command = fit_command(config, setting, seed, self.flags, seed_runs)
            log = fit_log(seed_runs)
            print(f"[{self.study.study_name}] {label} seed {seed}: fitting (log: {log})")
            outcome = run_fit(command, seed_runs, self.storage, trial._trial_id)
            if outcome.signal:
                studies.hand_back(self.study, self.storage, trial._trial_id, "sweep stopped")
                print(f"[{self.study.study_name}] stopped; the same command carries on")
                return outcome.signal
            if outcome.killed and trial.user_attrs.get("kills", 0) < KILL_RETRIES:
                # its last.ckpt is there: a copy of the trial goes on from it, now or later
                trial.set_user_attr("kills", trial.user_attrs.get("kills", 0) + 1)
                studies.hand_back(self.study, self.storage, trial._trial_id, outcome.error)
                print(f"[{self.study.study_name}] {label} seed {seed}: {outcome.error}; retrying")
                return None
            if outcome.error:
                print(f"[{self.study.study_name}] {label} seed {seed} failed: {outcome.error}")
                trial.set_user_attr("error", f"seed {seed}: {outcome.error}")
                self.study.tell(trial, state=TrialState.FAIL)
                return None
            trial.set_user_attr(f"run/{seed}", {"seed": seed, **outcome.result})
            self.report(label, seed, outcome.result)
        records = [normalize(trial.user_attrs[f"run/{seed}"]) for seed in seeds]
        # the validation curve, for Optuna's own tools (optuna-dashboard's intermediate values)
        for epoch, value in enumerate(mean_curve([seed_folder(folder, s) for s in seeds]), 1):
            trial.report(float(value), epoch)
        self.study.tell(trial, sum(r["val/acc_best"] for r in records) / len(records))
        return None

    def pruning(self, trial: optuna.Trial, label: str) -> str | None:
        """Why the setting's remaining seeds are not run (sweep files with `prune`); its seeds
        so far are a grid's finished trials of the setting and a search trial's own runs."""
        if self.sweep.prune is None:
            return None
        summary = sweep_summary.summarise(self.study)
        if label in summary.pruned:  # a grid's next seed of a pruned setting
            return summary.pruned[label][1]
        own = next((s for s in summary.settings if s.label == label), None)
        values = own.by_seed(SELECTION) if own else {}
        for key, run in trial.user_attrs.items():
            if key.startswith("run/"):
                values[run["seed"]] = normalize(run)[SELECTION]
        return prune_reason(summary, label, values, self.sweep.prune)

    def report(self, label: str, seed: int, result: dict) -> None:
        finished = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        test = f", test/acc {result['test/acc']:.2%}" if result["test/acc"] is not None else ""
        print(
            f"[{self.study.study_name}] {label} seed {seed}: val/acc_best "
            f"{result['val/acc_best']:.2%}{test}, {result['train_seconds']:.0f} s training "
            f"({finished + 1} of {self.total} trials done)"
        )


def first_attempt(trial: optuna.Trial) -> int:
    """The number of the trial this one retries, else its own: a retry reuses the folders."""
    frozen = trial.study.get_trials(deepcopy=False)[trial.number]
    number = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    return trial.number if number is None else number
