"""Is a setting better, or is the difference noise? The 95% interval of a mean over seeds, and
a setting compared with another over the seeds both ran.

Runs with the same seed share their data order and initial weights, so the per-seed
differences of two settings vary less than either setting does: the comparison is paired. The
test is the paired t-test (two-sided). Wilcoxon's signed-rank test needs no normality, but with
n seeds its smallest two-sided p-value is 2 / 2**n: 0.25 with 3 seeds, 0.0625 with 5, never
below 0.05 for the seed counts a sweep affords.
"""

import math
import statistics
from dataclasses import dataclass

from scipy import stats

LEVEL = 0.95


def interval(values: list[float]) -> tuple[float, float] | None:
    """The t-based LEVEL confidence interval of the mean (n - 1 degrees of freedom); None for
    fewer than two values."""
    if len(values) < 2:
        return None
    mean, spread = statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))
    half = stats.t.ppf((1 + LEVEL) / 2, len(values) - 1) * spread
    return mean - half, mean + half


@dataclass
class Comparison:
    """A setting against a reference, over the seeds both ran."""

    seeds: int  # how many seeds both ran
    difference: float | None  # mean of (setting - reference), per shared seed
    interval: tuple[float, float] | None  # of the difference
    p: float | None  # paired t-test, two-sided; None below two seeds or for equal differences

    @property
    def tied(self) -> bool:
        """These seeds cannot tell the two apart: the difference's interval contains 0."""
        return self.interval is not None and self.interval[0] <= 0 <= self.interval[1]


def paired(setting: dict[int, float], reference: dict[int, float]) -> Comparison:
    """`setting` against `reference` (each a value per seed), over their shared seeds."""
    shared = sorted(set(setting) & set(reference))
    differences = [setting[seed] - reference[seed] for seed in shared]
    if not differences:
        return Comparison(0, None, None, None)
    mean = statistics.fmean(differences)
    if len(differences) < 2 or statistics.stdev(differences) < 1e-12:  # t is undefined
        return Comparison(len(shared), mean, interval(differences), None)
    test = stats.ttest_rel([setting[s] for s in shared], [reference[s] for s in shared])
    return Comparison(len(shared), mean, interval(differences), float(test.pvalue))
