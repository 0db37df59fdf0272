"""Pruning across seeds, opt-in (`prune: P` in a sweep file): a setting's remaining seeds are
not run once the seeds it has run are significantly worse than the best setting's on the same
seeds: the summary's paired t-test (significance.py), one-sided, p below P.

Optuna's WilcoxonPruner asks the same question with a test that needs no normality, but its
one-sided p cannot fall below 1/2**n: with the 3-5 seeds a sweep affords it would prune after
the fourth seed at the earliest. Checking after every seed tests several times, so the chance of
pruning a setting that is not worse is higher than P; settings are pruned, never chosen, and the
summary lists them with the figures that pruned them.
"""

from mnist_lit.sweeps.significance import Comparison, paired
from mnist_lit.sweeps.summary import SELECTION, Summary

MIN_SEEDS = 2  # seeds in common with the best setting before a setting can be pruned


def lower_p(comparison: Comparison) -> float | None:
    """The one-sided p of a setting being lower than the reference it was compared with; None
    below MIN_SEEDS shared seeds."""
    if comparison.seeds < MIN_SEEDS:
        return None
    if comparison.p is None:  # equal differences: lower on every seed alike, or never
        return 0.0 if comparison.difference < 0 else 1.0
    half = comparison.p / 2
    return half if comparison.difference < 0 else 1 - half


def prune_reason(summary: Summary, label: str, values: dict[int, float], p: float) -> str | None:
    """Why the setting `label`, with `values` (its val/acc_best per seed run so far), stops
    here: significantly below the best other setting; None when it goes on."""
    others = [s for s in summary.settings if s.label != label and s.by_seed(SELECTION)]
    if not others:
        return None
    best = others[0]  # summary.settings are ranked by mean val/acc_best
    comparison = paired(values, best.by_seed(SELECTION))
    found = lower_p(comparison)
    if found is None or found >= p:
        return None
    return (
        f"{SELECTION} {-100 * comparison.difference:.2f} points below `{best.label}` over "
        f"{comparison.seeds} shared seeds (paired t, one-sided p = {found:.3f} < {p})"
    )
