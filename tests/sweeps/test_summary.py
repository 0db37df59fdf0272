"""The sweep's summary: statistics per setting over its seeds, each setting compared with the
first over their shared seeds, failures and ties said, as Markdown and CSV; and the interval
and the paired test themselves (significance.py) on hand-computed cases."""

import csv
import io
import math
import statistics

import pytest

from mnist_lit.sweeps.significance import interval, paired
from mnist_lit.sweeps.summary import csv_text, markdown, summarise
from tests.sweeps.grids import finish_trials, grid_study

T_2DF = 4.302653  # Student's t for a two-sided 95% interval with 2 degrees of freedom (a table)


def test_interval_is_the_t_interval_of_the_mean():
    low, high = interval([0.990, 0.992, 0.994])
    half = T_2DF * 0.002 / math.sqrt(3)  # the values' sample std is 0.002
    assert (low, high) == pytest.approx((0.992 - half, 0.992 + half), abs=1e-6)
    assert interval([0.99]) is None and interval([]) is None


def test_paired_comparison_uses_the_shared_seeds_only():
    # seeds 1-3 shared; differences 0.01, 0.02, 0.03: mean 0.02, std 0.01, t = 2 * sqrt(3)
    comparison = paired({1: 0.93, 2: 0.94, 3: 0.96, 4: 0.5}, {1: 0.92, 2: 0.92, 3: 0.93, 5: 0.1})
    t = 2 * math.sqrt(3)
    assert comparison.seeds == 3 and comparison.difference == pytest.approx(0.02)
    assert comparison.p == pytest.approx(1 - t / math.sqrt(t**2 + 2))  # t's CDF at 2 df: 0.074
    half = T_2DF * 0.01 / math.sqrt(3)
    assert comparison.interval == pytest.approx((0.02 - half, 0.02 + half), abs=1e-6)
    assert comparison.tied  # -0.005 to 0.045: these three seeds cannot tell the two apart
    steady = paired({1: 0.930, 2: 0.941, 3: 0.952}, {1: 0.92, 2: 0.93, 3: 0.94})
    assert steady.interval[0] > 0 and not steady.tied and steady.p < 0.01


def test_paired_comparison_without_enough_shared_seeds():
    assert paired({1: 0.9}, {2: 0.8}).difference is None  # no seed in common
    one = paired({1: 0.9, 2: 0.95}, {1: 0.8})
    assert (one.seeds, one.interval, one.p, one.tied) == (1, None, None, False)
    assert one.difference == pytest.approx(0.1)
    same = paired({1: 0.9, 2: 0.8}, {1: 0.8, 2: 0.7})  # equal differences: no t statistic
    assert same.p is None and same.interval == pytest.approx((0.1, 0.1)) and not same.tied


def test_summary_statistics_ranking_and_failures(tmp_path):
    _, _, storage, study = grid_study(tmp_path, lrs=(1e-3, 3e-3), seeds=(1, 2))
    finish_trials(  # (lr, seed) -> val/acc_best, test/acc, train_seconds; (3e-3, 2) fails
        study,
        storage,
        {
            (1e-3, 1): (0.990, 0.980, 10.0),
            (1e-3, 2): (0.970, 0.960, 14.0),
            (3e-3, 1): (0.995, 0.990, 12.0),
        },
    )
    summary = summarise(study)
    assert [s.label for s in summary.settings] == ["fast,lr=0.003", "fast,lr=0.001"]
    assert summary.failed == ["fast,lr=0.003 seed 2: non-finite loss"]
    assert summary.chosen is None  # its best setting may only be best by its failed seed
    assert "← chosen" not in markdown(summary) and "No setting chosen" in markdown(summary)
    summary = summarise(study, choose_anyway=True)
    assert summary.chosen.label == "fast,lr=0.003"
    table = markdown(summary)
    std = statistics.stdev([0.990, 0.970])
    low, high = (100 * bound for bound in interval([0.990, 0.970]))
    assert f"| `fast,lr=0.001` | 2 | 98.00 ± {100 * std:.2f} | {low:.2f} – {high:.2f} |" in table
    # compared over seed 1 alone, the only one both ran: a difference, no interval, no test
    assert "| 97.00 | 99.00 | -0.50, 1 seed | – |" in table
    assert "ran 2 seeds and `fast,lr=0.003` 1: compared over the 1 both ran" in table
    assert "| `fast,lr=0.003` ← chosen | 1 | 99.50 | – | 99.50 | 99.50 | – | – |" in table
    rows = list(csv.DictReader(io.StringIO(csv_text(summary))))
    assert rows[1]["setting"] == "fast,lr=0.001" and rows[1]["chosen"] == "False"
    assert float(rows[1]["val/acc_best_mean"]) == pytest.approx(0.98)
    assert float(rows[1]["val/acc_best_ci_low"]) == pytest.approx(low / 100)
    assert float(rows[1]["train_seconds_std"]) == pytest.approx(statistics.stdev([10, 14]))
    assert rows[1]["paired_seeds"] == "1" and rows[1]["paired_p"] == ""


def test_a_paired_difference_is_told_from_noise_where_the_intervals_overlap(tmp_path):
    _, _, storage, study = grid_study(tmp_path, lrs=(1e-3, 2e-3, 3e-3), seeds=(1, 2, 3))
    val = {  # seed-to-seed spread of 1 point, far more than the settings' differences
        3e-3: (0.990, 0.970, 0.980),
        1e-3: (0.986, 0.965, 0.974),  # 0.4-0.6 points below on every seed
        2e-3: (0.992, 0.966, 0.979),  # above on one seed, below on two
    }
    finish_trials(
        study, storage, {(lr, s + 1): (v[s], 0.9, 1.0) for lr, v in val.items() for s in range(3)}
    )
    summary = summarise(study)
    assert [s.label for s in summary.settings] == [
        "fast,lr=0.003",
        "fast,lr=0.002",
        "fast,lr=0.001",
    ]
    worse = summary.compared(summary.settings[2])
    # differences -0.004, -0.005, -0.006: mean -0.005, std 0.001, t = -5 * sqrt(3)
    t = 5 * math.sqrt(3)
    assert worse.p == pytest.approx(1 - t / math.sqrt(t**2 + 2))  # 0.013
    assert not worse.tied and summary.compared(summary.settings[1]).tied
    first, last = (interval(s.values("val/acc_best")) for s in summary.settings[::2])
    assert last[1] > first[0]  # their own intervals overlap: only the pairing tells them apart
    table = markdown(summary)
    assert "| -0.50 [-0.75, -0.25], 3 seeds | 0.013 |" in table
    assert "| -0.10 [-0.85, +0.65] tied, 3 seeds | 0.622 |" in table  # std 0.003
    assert "Not told apart from the chosen one by these seeds: `fast,lr=0.002`" in table
    rows = {row["setting"]: row for row in csv.DictReader(io.StringIO(csv_text(summary)))}
    assert rows["fast,lr=0.002"]["paired_tied"] == "True"
    assert rows["fast,lr=0.001"]["paired_tied"] == "False"
    assert float(rows["fast,lr=0.001"]["paired_diff"]) == pytest.approx(-0.005)


def test_one_seed_per_setting_says_there_is_no_interval(tmp_path):
    _, _, storage, study = grid_study(tmp_path, lrs=(1e-3, 3e-3), seeds=(7,))
    finish_trials(study, storage, {(1e-3, 7): (0.97, 0.9, 1.0), (3e-3, 7): (0.98, 0.9, 1.0)})
    table = markdown(summarise(study))
    assert "One seed per setting: no interval and no paired test" in table
    assert "| -1.00, 1 seed | – |" in table
