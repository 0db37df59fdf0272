"""One seed of a sweep trial: an ordinary `python -m mnist_lit fit` in a process of its own,
with its output in a log file beside its run folder, resumed from its last.ckpt when an
earlier attempt was stopped, and stopped the way `fit` is (SIGTERM, Ctrl-C) when the sweep
is."""

import ctypes
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_lit.sweeps.file import flag_value
from mnist_lit.sweeps.study import Heartbeat
from mnist_lit.tracking.metrics_file import read_metrics
from mnist_lit.tracking.runs import METRICS, metrics_path, newest, newest_checkpoint, runs_below
from mnist_lit.tracking.tensorboard import SHARED_EXPERIMENT

# the figures of each seed's run that the study records (metrics.json's names)
RECORDED = ("val/acc_best", "test/acc", "train_seconds", "epochs")
SEED = "seed_"  # a sweep's folders: NAME/SETTING/seed_S/, each with fit.log and its version_N


def seed_folder(setting: Path, seed: int) -> Path:
    return setting / f"{SEED}{seed}"


def seed_folders(setting: Path) -> dict[int, Path]:
    """A setting's folders by seed, in seed order (none when `setting` is no sweep setting)."""
    found = {}
    for folder in setting.glob(f"{SEED}*"):
        seed = folder.name.removeprefix(SEED)
        if folder.is_dir() and seed.lstrip("-").isdigit():
            found[int(seed)] = folder
    return dict(sorted(found.items()))


def fit_log(seed_runs: Path) -> Path:
    """The output of every attempt at one seed's fit, one after the other."""
    return seed_runs / "fit.log"


@dataclass
class FitOutcome:
    result: dict[str, Any] | None  # the run's figures, when it finished
    error: str | None  # why it failed, when it did
    signal: int | None  # the signal that stopped the sweep (SIGTERM, SIGINT) during the fit
    killed: bool = False  # the fit was killed from outside (the OOM killer, say): worth a retry


def fit_command(config: Path, setting: dict, seed: int, flags: list[str], runs: Path) -> list[str]:
    """`fit` for one seed of a setting, its runs in `runs` (version_N as for any run); the
    setting comes last so that it wins over the config and the sweep's common flags."""
    command = [sys.executable, "-m", "mnist_lit", "fit", "--config", str(config), *flags]
    for key, value in setting.items():
        if key != "config":
            command += [f"--{key}", flag_value(value)]
    command += ["--seed_everything", str(seed)]
    command += ["--trainer.logger.init_args.save_dir", str(runs.parent)]
    command += ["--trainer.logger.init_args.name", runs.name]
    if newest_checkpoint(runs, "last"):
        command += ["--ckpt_path", "last"]  # an earlier attempt was stopped: go on from there
    return command


def die_with_parent() -> None:
    """Runs in the fit's process before it starts: if the sweep is killed outright (SIGKILL),
    the fit gets SIGTERM and stops as a preempted run does, rather than run on unseen."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_fit(command: list[str], runs: Path, storage, trial_id: int) -> FitOutcome:
    runs.mkdir(parents=True, exist_ok=True)
    log_path = fit_log(runs)
    received: list[int] = []
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        # its own session: Ctrl-C in the terminal reaches the sweep, which passes it on once
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent, env={**os.environ, SHARED_EXPERIMENT: "1"},
        )  # fmt: skip

        def forward(signum: int, frame: Any) -> None:
            received.append(signum)
            # SIGTERM whatever stopped the sweep: Lightning saves last.ckpt and stops on it,
            # while SIGINT is ignored by a fit whose sweep was started in the background
            # (shells start background jobs with SIGINT ignored, and children inherit that)
            process.send_signal(signal.SIGTERM)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with Heartbeat(storage, trial_id):
                status = process.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    if received:
        return FitOutcome(None, None, received[0])
    if status != 0:
        # killed (the OOM killer), or stopped by a signal of its own (preempted): resumable
        stopped = status < 0 or status in (128 + signal.SIGTERM, 128 + signal.SIGINT)
        return FitOutcome(None, failure_reason(log_path, status), None, killed=stopped)
    return read_result(runs)


def failure_reason(log_path: Path, status: int) -> str:
    """The signal that killed the fit; else its own `error:` line, else the last line it
    printed (a traceback's exception)."""
    if status < 0:
        name = signal.Signals(-status).name
        guess = " (out of memory?)" if -status == signal.SIGKILL else ""
        return f"killed by {name}{guess} (log: {log_path})"
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()]
    errors = [line for line in lines if line.startswith("error:")]
    last = errors[-1] if errors else next((line for line in reversed(lines) if line), "")
    return f"exit status {status}: {last} (log: {log_path})"


def read_result(runs: Path) -> FitOutcome:
    """The figures the trial's run wrote to its metrics.json."""
    written = newest([metrics_path(run) for run in runs_below(runs)])
    if written is None:
        return FitOutcome(None, f"the fit wrote no {METRICS} under {runs}", None)
    metrics = read_metrics(written.parent)
    if metrics.get("val/acc_best") is None:
        return FitOutcome(None, "no val/acc_best: a sweep chooses by validation", None)
    result = {key: metrics.get(key) for key in RECORDED}
    result["run"] = str(written.parent.resolve())
    return FitOutcome(result, None, None)
