"""Verdicts against a baseline, by the rule written once in experiments/README.md ("Verdict rule").

Secondary rows: a t-test of each row against its baseline row (per group in a factorial sweep), paired by seed when
both rows have exactly the same seeds, else Welch's; p-values
Holm-corrected over all of them, better / worse (in the metric's direction, ablate.config.metric_registry) only when the
Holm-adjusted p < alpha, else n.s. The primary comparison (``primary``): paired by seed when both arms have the same
seeds, else Welch; yes / no / inconclusive with the minimum detectable effect."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ablate.errors import ConfigError
from ablate.report.runs import Run, matches_over, normalize, override_key
from ablate.report.significance import holm, mde, paired_t, welch
from ablate.report.stats import Row, find_row, is_accuracy, lower_is_better


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
    rows: list[Row],
    baseline: str,
    metric: str,
    alpha: float = 0.05,
    row_metrics: dict[str, str] | None = None,
    over: tuple[str, ...] = ("seed",),
) -> list[Row]:
    """Mark every row better / worse / n.s. against its baseline (see ``baselines_for``) at level ``alpha``, Holm-
    corrected: a paired t-test by seed when both rows have exactly the same seeds (``over`` keys), else Welch's
    t-test; returns the baseline rows.

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
        base_metric = chosen.get(id(base), metric)
        base_values = base.stats[base_metric]
        stat = row.stats[row.compared]
        a, b = paired_values(row, row.compared, over), paired_values(base, base_metric, over)
        row.t, row.p, paired = paired_or_welch(a, b, stat.values, base_values.values)
        if math.isnan(row.p):
            tested = stat.n > 1 and base_values.n > 1
            # Both sides constant: equal means are no difference (e.g. an inactive option); unequal ones untestable.
            row.verdict = "n.s." if tested and stat.mean == base_values.mean else None
            continue
        row.test = "paired t" if paired else "Welch"
    apply_holm(rows, alpha)
    return list({id(b): b for b in bases.values()}.values())


def apply_holm(rows: list[Row], alpha: float, exclude: Row | None = None, extra: Sequence[Any] = ()) -> int:
    """Holm over every tested row but ``exclude`` (the primary comparison, tested on its own) and the ``extra``
    secondary-metric tests (ablate.report.secondary.SecondaryTest: p, better_direction; given p_holm and verdict);
    better / worse only when the adjusted p < alpha, else n.s.
    Returns the size of the family."""
    family = [r for r in rows if r is not exclude and r.base is not None and r.base is not r and r.test]
    adjusted = holm([r.p for r in family] + [s.p for s in extra])
    for row, p_adj in zip(family, adjusted, strict=False):
        row.p_holm = p_adj
        row.verdict = _direction(row) if p_adj < alpha else "n.s."
    for test, p_adj in zip(extra, adjusted[len(family) :], strict=True):
        test.p_holm = p_adj
        test.verdict = ("better" if test.better_direction else "worse") if p_adj < alpha else "n.s."
    return len(adjusted)


def _direction(row: Row) -> str:
    higher = row.stats[row.compared].mean > row.base.stats[row.base.compared].mean
    return "better" if higher != lower_is_better(row.compared) else "worse"


@dataclass
class Primary:
    """The primary comparison's verdict: row - baseline on ``metric`` (raw units, accuracies as fractions)."""

    setting: str
    metric: str
    test: str  # "paired t" | "Welch"
    n: str  # "5 pairs" | "5 vs 4"
    diff: float  # mean difference, row - baseline
    ci: tuple[float, float]  # (1 - alpha) confidence interval of diff
    p: float  # two-sided
    p_tost: float  # equivalence within +-margin (two one-sided tests)
    mde: float  # minimum detectable |difference| at this n and std (two-sided alpha, power 0.8)
    verdict: str  # yes | no | inconclusive | gate failed (ablate.report.gates: the runs cannot decide the claim)
    reason: str  # why, in words
    expected: float
    margin: float
    alpha: float

    def line(self) -> str:
        """One line for the Markdown table: test, n, difference with CI, p, verdict (or the MDE)."""
        acc = is_accuracy(self.metric)
        num = (lambda v: f"{v * 100:+.2f} points") if acc else (lambda v: f"{v:+.4g}")
        size = (lambda v: f"{v * 100:.2f} points") if acc else (lambda v: f"{v:.4g}")
        level = f"{100 * (1 - self.alpha):g}%"
        text = (
            f"**Primary: {self.setting} vs baseline on {self.metric}** ({self.test}, {self.n}): "
            f"difference {num(self.diff)} ({level} CI {num(self.ci[0])} to {num(self.ci[1])}), p = {self.p:.3g}; "
            f"expected {num(self.expected_raw)}, margin ±{size(self.margin)}. **Verdict: {self.verdict}** "
            f"({self.reason}"
        )
        if self.verdict == "inconclusive":
            text += (
                f"; minimum detectable effect at this n and std: {size(self.mde)} (alpha = {self.alpha:g}, power 0.8)"
            )
        return text + ")."

    def fail_gates(self, failures: list[str]) -> None:
        """A failed gate is reported instead of the verdict (experiments/README.md "Verdict rule", step 0)."""
        self.verdict, self.reason = "gate failed", "; ".join(failures)

    @property
    def expected_raw(self) -> float:
        """The expected effect as a difference row - baseline (``expected`` is signed as an improvement)."""
        return -self.expected if lower_is_better(self.metric) else self.expected


def paired_or_welch(
    a: dict[tuple, float], b: dict[tuple, float], x: list[float], y: list[float]
) -> tuple[float, float, bool]:
    """(t, p, paired): a paired t-test on the per-key differences when both sides have exactly the same 2+ keys
    (``paired_values``), else Welch's t-test on all the values ``x`` vs ``y``."""
    if a and set(a) == set(b) and len(a) > 1:
        keys = sorted(a)
        return (*paired_t([a[k] for k in keys], [b[k] for k in keys]), True)
    return (*welch(x, y), False)


def paired_values(row: Row, metric: str, over: tuple[str, ...] = ("seed",)) -> dict[tuple, float]:
    """Completed runs' finite values keyed by their pooled keys (``seed`` from results.json, other --over keys from
    the overrides); an empty dict when two runs share a key or a run has no seed (then nothing is paired)."""
    out: dict[tuple, float] = {}
    for run in row.runs:
        value = run.metric(metric) if run.status == "completed" else None
        if value is None or not math.isfinite(value):
            continue
        key = _pair_key(run, over)
        if key is None or key in out:
            return {}
        out[key] = value
    return out


def _pair_key(run: Run, over: tuple[str, ...]) -> tuple | None:
    seed = run.seed
    if seed is None:  # a hand-written results.json: the seed override, if any
        seed = next((o.split("=", 1)[1] for o in run.overrides if override_key(o) == "seed"), None)
    if seed is None:
        return None
    others = sorted(
        normalize(o) for o in run.overrides if matches_over(override_key(o), over) and override_key(o) != "seed"
    )
    return (str(seed), *others)


def primary(
    rows: list[Row], setting: str, expected: float, margin: float, alpha: float, over: tuple[str, ...] = ("seed",)
) -> Primary:
    """Judge the --primary row against its baseline (after ``compare``), re-run Holm without it, attach the result
    to the row (``row.primary``) and return it.

    Paired t-test on the differences when both arms have the same pooling keys (seed, and any other --over key),
    else Welch. yes: p < alpha with the difference in the expected direction (``expected`` > 0: the row better than
    the baseline, in the metric's direction). no: p < alpha the other way, or equivalence within +-``margin`` by two
    one-sided tests (TOST) at alpha. Otherwise inconclusive, with the minimum detectable effect."""
    from scipy.stats import t as student_t

    row = find_row(rows, setting)
    if row is None:
        names = "; ".join(r.setting for r in rows)
        raise ConfigError(f"no row with setting '{setting}' for --primary; settings: {names}")
    base = row.base
    if base is None or base is row:
        raise ConfigError(f"--primary {setting} has no baseline row to be compared with (it is one, or has none)")
    a, b = paired_values(row, row.compared, over), paired_values(base, base.compared, over)
    if a and set(a) == set(b) and len(a) > 1:
        diffs = [a[k] - b[k] for k in sorted(a)]
        test, n = "paired t", f"{len(diffs)} pairs"
        diff, df = statistics.fmean(diffs), len(diffs) - 1
        se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    else:
        x, y = row.stats[row.compared].values, base.stats[base.compared].values
        test, n = "Welch", f"{len(x)} vs {len(y)}"
        if len(x) < 2 or len(y) < 2:
            raise ConfigError(f"--primary {setting}: needs 2+ completed runs per arm, has {n}")
        vx, vy = statistics.variance(x) / len(x), statistics.variance(y) / len(y)
        diff, se = statistics.fmean(x) - statistics.fmean(y), math.sqrt(vx + vy)
        # Welch-Satterthwaite degrees of freedom (both constant: any df, the statistic is degenerate anyway)
        df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1)) if se > 0 else len(x) + len(y) - 2
    if se > 0:
        p = float(2 * student_t.sf(abs(diff) / se, df))
        p_tost = float(max(student_t.sf((diff + margin) / se, df), student_t.cdf((diff - margin) / se, df)))
    else:  # constant differences: exact
        p, p_tost = (0.0 if diff != 0 else 1.0), (0.0 if abs(diff) < margin else 1.0)
    half = float(student_t.ppf(1 - alpha / 2, df)) * se
    expected_sign = math.copysign(1.0, -expected if lower_is_better(row.compared) else expected)
    if p < alpha and math.copysign(1.0, diff) == expected_sign:
        verdict, reason = "yes", f"significant at alpha = {alpha:g} in the expected direction"
    elif p < alpha:
        verdict, reason = "no", f"significant at alpha = {alpha:g} against the expected direction"
    elif p_tost < alpha:
        verdict, reason = "no", f"equivalent within ±margin: TOST p = {p_tost:.3g}"
    else:
        verdict, reason = "inconclusive", f"neither significant nor equivalent within ±margin (TOST p = {p_tost:.3g})"
    result = Primary(
        setting=row.setting,
        metric=row.compared,
        test=test,
        n=n,
        diff=diff,
        ci=(diff - half, diff + half),
        p=p,
        p_tost=p_tost,
        mde=mde(se, df, alpha),
        verdict=verdict,
        reason=reason,
        expected=expected,
        margin=margin,
        alpha=alpha,
    )
    row.t, row.p, row.test, row.primary = (diff / se if se > 0 else math.nan), p, test, result
    row.verdict = _direction(row) if p < alpha else "n.s."
    row.p_holm = math.nan
    apply_holm(rows, alpha, exclude=row)
    return result
