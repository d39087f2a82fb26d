"""Verdicts against a baseline: Welch's t-test of each row against its baseline row (per group in a factorial
sweep), better / worse / n.s. in the metric's direction (ablate.config.metric_registry)."""

from __future__ import annotations

import math
import statistics
import warnings

from ablate.errors import ConfigError
from ablate.report.runs import normalize, override_key
from ablate.report.stats import Row, find_row, lower_is_better


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


def baselines_for(rows: list[Row], baseline: str) -> dict[int, Row]:
    """id(row) -> the row it is compared with. A setting that names one row is every row's baseline; one that fixes
    only some keys of a factorial sweep (``reg=none`` beside ``model.activation=relu,tanh``) gives each row the row
    with those values and the same other settings (per-group baselines). Rows without such a row get none."""
    base = find_row(rows, baseline)
    if base is not None:
        return {id(r): base for r in rows}
    wanted = frozenset(normalize(t) for t in baseline.split())
    fixed = {override_key(t) for t in wanted}
    by_key = {r.key: r for r in rows}
    out = {}
    for row in rows:
        target = frozenset(t for t in row.key if override_key(t) not in fixed) | (wanted - row.shared)
        if target in by_key:
            out[id(row)] = by_key[target]
    if not out:
        names = "; ".join(r.setting for r in rows)
        raise ConfigError(f"no row with setting '{baseline}' for --baseline; settings: {names}")
    return out


def compare(
    rows: list[Row], baseline: str, metric: str, alpha: float = 0.05, row_metrics: dict[str, str] | None = None
) -> list[Row]:
    """Mark every row better / worse / n.s. against its baseline (see ``baselines_for``) by Welch's t-test at level
    ``alpha``; returns the baseline rows.

    ``row_metrics`` maps a setting to the metric that stands for it, when that is not ``metric``: an ensemble or
    averaged model is judged by its own accuracy (``ensemble=swa`` -> ``test/acc_swa``) against the baseline's
    ``metric`` (the baseline's own entry, if given, replaces ``metric`` on its side)."""
    bases = baselines_for(rows, baseline)
    chosen: dict[int, str] = {}
    for setting, m in (row_metrics or {}).items():
        row = find_row(rows, setting)
        if row is None:
            names = "; ".join(r.setting for r in rows)
            raise ConfigError(f"no row with setting '{setting}' for --row-metric; settings: {names}")
        chosen[id(row)] = m
    for m in {metric, *chosen.values()}:
        if m not in rows[0].stats:
            raise ConfigError(f"metric {m} of the comparison is not among --metrics {', '.join(rows[0].stats)}; add it")
        lower_is_better(m)  # before any test: a metric without a known direction gets no better/worse verdict
    for row in rows:
        row.compared = chosen.get(id(row), metric)
        base = bases.get(id(row))
        row.base = base
        if base is None:
            continue
        if row is base:
            row.verdict = "baseline"
            continue
        base_values = base.stats[chosen.get(id(base), metric)]
        stat = row.stats[row.compared]
        row.t, row.p = welch(stat.values, base_values.values)
        if math.isnan(row.p):
            tested = stat.n > 1 and base_values.n > 1
            # Both sides constant: equal means are no difference (e.g. an inactive option); unequal ones untestable.
            row.verdict = "n.s." if tested and stat.mean == base_values.mean else None
            continue
        if row.p >= alpha:
            row.verdict = "n.s."
        else:
            higher = stat.mean > base_values.mean
            row.verdict = "better" if higher != lower_is_better(row.compared) else "worse"
    return list({id(b): b for b in bases.values()}.values())
