"""The significance tests behind the verdicts (report/verdicts.py): Welch's and the paired t-test (scipy.stats), Holm's
step-down adjustment and the minimum detectable effect of a t-test. Pure functions of numbers: no runs, no rows."""

from __future__ import annotations

import math
import statistics
import warnings

POWER = 0.8  # of the minimum detectable effect


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Welch's t statistic and two-sided p-value (unequal variances); NaN when either side has n < 2 or both
    sides are constant (the statistic divides by zero)."""
    if len(a) < 2 or len(b) < 2 or (statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0):
        return math.nan, math.nan
    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # a constant side makes scipy warn about precision; the result is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        res = ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def paired_t(a: list[float], b: list[float]) -> tuple[float, float]:
    """The paired t statistic and two-sided p of a - b (scipy.stats.ttest_rel); NaN when the differences are constant
    (then nothing is testable) or n < 2."""
    from scipy.stats import ttest_rel

    diffs = [x - y for x, y in zip(a, b, strict=True)]
    if len(diffs) < 2 or statistics.pstdev(diffs) == 0:
        return math.nan, math.nan
    result = ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment, written by hand (statsmodels is not a dependency): the i-th smallest of m p-values
    becomes max over j <= i of min(1, (m - j + 1) * p_(j)); returned in the input order."""
    m = len(pvalues)
    adjusted = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def mde(se: float, df: float, alpha: float, power: float = POWER) -> float:
    """The smallest true difference a two-sided t-test at ``alpha`` detects with probability ``power``, given the
    standard error ``se`` of the difference (paired: std of the differences / sqrt(n)) and its degrees of freedom.

    Exact power from the noncentral t distribution (scipy.stats.nct): P(|T| > t_crit) with noncentrality
    delta / se, both tails counted; solved for delta by root finding. (The normal approximation,
    (z_{1-alpha/2} + z_power) * se, is smaller for small n.)"""
    if not se > 0:
        return 0.0 if se == 0 else math.nan
    from scipy.optimize import brentq
    from scipy.stats import nct
    from scipy.stats import t as student_t

    crit = float(student_t.ppf(1 - alpha / 2, df))

    def shortfall(nc: float) -> float:
        lower = float(nct.cdf(-crit, df, nc))  # the wrong-sign tail: ~0, and NaN in scipy for a large nc
        return float(nct.sf(crit, df, nc)) + (lower if math.isfinite(lower) else 0.0) - power

    hi = 1.0
    while shortfall(hi) < 0:
        hi *= 2
    return float(brentq(shortfall, 0.0, hi, xtol=1e-10)) * se
