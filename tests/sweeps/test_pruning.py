"""Pruning across seeds: a setting significantly below the best on the seeds both ran stops
there, is recorded as pruned with its figures, and is never chosen; on hand-computed cases, and
through the sweep's own worker with fits replaced by known figures."""

import math

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from mnist_lit.sweeps import command
from mnist_lit.sweeps.file import SweepFileError, read_sweep_file
from mnist_lit.sweeps.pruning import lower_p, prune_reason
from mnist_lit.sweeps.significance import paired
from mnist_lit.sweeps.storage import open_storage
from mnist_lit.sweeps.study import add_waiting, open_study
from mnist_lit.sweeps.summary import markdown, summarise
from mnist_lit.sweeps.trial import FitOutcome
from tests.sweeps.grids import FAST, finish_trials, grid_study, sweep_file

# val/acc_best by lr and seed: lr 1e-5 is below 1e-3 on every seed, by 0.4-0.6 points
VAL = {1e-3: {1: 0.990, 2: 0.970, 3: 0.980}, 1e-5: {1: 0.986, 2: 0.964, 3: 0.975}}


def test_the_one_sided_p_on_hand_computed_cases():
    # differences -0.004, -0.006: t = -5 with 1 degree of freedom (a Cauchy distribution),
    # so P(T < -5) = 1/2 + atan(-5) / pi
    comparison = paired({1: 0.986, 2: 0.964}, {1: 0.990, 2: 0.970})
    assert lower_p(comparison) == pytest.approx(0.5 + math.atan(-5) / math.pi)  # 0.063
    higher = paired({1: 0.994, 2: 0.976}, {1: 0.990, 2: 0.970})
    assert lower_p(higher) == pytest.approx(0.5 + math.atan(5) / math.pi)
    assert lower_p(paired({1: 0.98}, {1: 0.99})) is None  # one seed: no test
    assert lower_p(paired({1: 0.98, 2: 0.97}, {1: 0.99, 2: 0.98})) == 0.0  # equal differences


def test_a_setting_is_pruned_only_below_the_threshold(tmp_path):
    _, _, storage, study = grid_study(tmp_path, lrs=(1e-3,), seeds=(1, 2, 3))
    finish_trials(study, storage, {(1e-3, s): (v, 0.9, 1.0) for s, v in VAL[1e-3].items()})
    summary = summarise(study)
    two_seeds = {1: 0.986, 2: 0.964}  # one-sided p = 0.063
    assert prune_reason(summary, "fast,lr=1e-05", two_seeds, p=0.05) is None
    reason = prune_reason(summary, "fast,lr=1e-05", two_seeds, p=0.1)
    assert reason == (
        "val/acc_best 0.50 points below `fast,lr=0.001` over 2 shared seeds "
        "(paired t, one-sided p = 0.063 < 0.1)"
    )
    assert prune_reason(summary, "fast,lr=0.001", VAL[1e-3], p=0.1) is None  # itself the best
    assert prune_reason(summary, "fast,lr=1e-05", {1: 0.5}, p=0.1) is None  # one seed so far


def fake_fits(monkeypatch) -> list[tuple[float, int]]:
    """Replace each seed's fit with VAL's figures; the (lr, seed) of every fit started."""
    started = []

    def run_fit(fit, seed_runs, storage, trial_id):
        lr, seed = (
            float(fit[fit.index("--model.lr") + 1]),
            int(fit[fit.index("--seed_everything") + 1]),
        )
        started.append((lr, seed))
        result = {"val/acc_best": VAL[lr][seed], "test/acc": 0.9, "train_seconds": 1.0, "epochs": 1}
        return FitOutcome(result, None, None)

    monkeypatch.setattr(command, "run_fit", run_fit)
    return started


def run_worker(tmp_path, content: dict, enqueue: list[dict] = ()) -> optuna.Study:
    sweep = read_sweep_file(sweep_file(tmp_path, **content))
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = open_study(storage, "grid", sweep, [])
    for params in enqueue:  # settings to try, in this order, as a search's retries are stored
        add_waiting(study, params, sweep.space)
    command.Worker(sweep, study, storage, tmp_path / "sweep", []).work()
    return study


def test_a_grid_setting_below_the_best_stops_after_two_seeds(tmp_path, monkeypatch):
    started = fake_fits(monkeypatch)
    content = {"seeds": [1, 2, 3], "grid": {"model.lr": [1e-3, 1e-5]}, "prune": 0.1}
    study = run_worker(tmp_path, content)
    assert started == [(1e-3, 1), (1e-3, 2), (1e-3, 3), (1e-5, 1), (1e-5, 2)]  # not (1e-5, 3)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert [t.params for t in pruned] == [{"model.lr": 1e-5, "seed": 3}]
    assert "below `fast,lr=0.001` over 2 shared seeds" in pruned[0].user_attrs["pruned"]
    summary = summarise(study)
    assert [s.label for s in summary.settings] == ["fast,lr=0.001"]  # never a winner
    assert summary.chosen.label == "fast,lr=0.001" and summary.failed == []
    assert "Pruned: `fast,lr=1e-05` after 2 seeds: val/acc_best 0.50 points below" in markdown(
        summary
    )


def test_a_search_setting_below_the_best_stops_after_two_seeds(tmp_path, monkeypatch):
    started = fake_fits(monkeypatch)
    space = {"model.lr": {"low": 1e-6, "high": 1e-2, "log": True}}
    content = {"seeds": [1, 2, 3], "search": {"trials": 2, "space": space}, "prune": 0.1}
    study = run_worker(tmp_path, content, enqueue=[{"model.lr": 1e-3}, {"model.lr": 1e-5}])
    assert started == [(1e-3, 1), (1e-3, 2), (1e-3, 3), (1e-5, 1), (1e-5, 2)]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED]
    assert "Pruned: `fast,lr=1e-05` after 2 seeds" in markdown(summarise(study))


def test_without_prune_every_seed_runs(tmp_path, monkeypatch):
    started = fake_fits(monkeypatch)
    run_worker(tmp_path, {"seeds": [1, 2, 3], "grid": {"model.lr": [1e-3, 1e-5]}})
    assert len(started) == 6


@pytest.mark.parametrize(
    "prune, seeds, message",
    [
        (0.05, [1, 2], "prune needs 3 seeds or more"),
        (1.5, [1, 2, 3], "prune must be a p-value between 0 and 1"),
        ("yes", [1, 2, 3], "prune must be a p-value between 0 and 1"),
    ],
)
def test_a_pruning_setting_that_cannot_work_is_one_line(tmp_path, prune, seeds, message):
    path = tmp_path / "grid.yaml"
    content = {"configs": [FAST], "seeds": seeds, "grid": {"model.lr": [1e-3]}, "prune": prune}
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(SweepFileError, match=message):
        read_sweep_file(path)
