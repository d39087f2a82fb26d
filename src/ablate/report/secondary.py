"""Secondary metrics (``--secondary-metric``): every tested row against its baseline on further metrics (NLL, ECE
beside accuracy), each row on its own variant of the metric, Holm-corrected together with the rows' tests.

The variant follows the row's --row-metric: a row judged by ``test/acc_swa`` against the baseline's ``test/acc``
(suffix ``_swa``) is judged on ``test/nll`` by ``test/nll_swa``, so the weight average's calibration is tested, not
that of the SGD iterate its run also recorded. A row whose variant no run recorded is not tested (a note says so)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from ablate.report.stats import Row, is_accuracy, lower_is_better


@dataclass
class SecondaryTest:
    """One row vs its baseline on one secondary metric (raw units; accuracies as fractions)."""

    setting: str
    metric: str  # the row's side, e.g. test/nll_swa
    base_metric: str  # the baseline's side, e.g. test/nll
    test: str  # "paired t" | "Welch"
    n: str  # "8 pairs" | "5 vs 4"
    diff: float  # mean row - mean baseline
    p: float
    p_holm: float = math.nan
    verdict: str = ""  # better | worse | n.s. (set with the Holm family)

    @property
    def better_direction(self) -> bool:
        """True when the row's mean is on the better side of the baseline's (metric direction)."""
        return (self.diff < 0) == lower_is_better(self.base_metric)

    def line(self) -> str:
        num = f"{self.diff * 100:+.2f} points" if is_accuracy(self.base_metric) else f"{self.diff:+.4g}"
        return (
            f"- {self.setting}: {self.metric} vs {self.base_metric} {num} ({self.test}, {self.n}), p = {self.p:.3g}, "
            f"Holm p = {self.p_holm:.3g}: **{self.verdict}**"
        )


def variant(metric: str, row: Row, key_metric: str) -> str:
    """The row's own version of ``metric``: its --row-metric suffix carried over (test/acc -> test/acc_swa gives
    test/nll -> test/nll_swa); the metric itself when the row is judged on the key metric, or on a metric of another
    form."""
    compared = row.compared or key_metric
    if compared != key_metric and compared.startswith(key_metric):
        return metric + compared[len(key_metric) :]
    return metric


def secondary_tests(
    rows: list[Row], metrics: list[str], key_metric: str, over: tuple[str, ...] = ("seed",)
) -> tuple[list[SecondaryTest], list[str]]:
    """The tests of every row that has a baseline (see ablate.report.verdicts.compare) on each of ``metrics``, paired
    by seed when both sides have the same seeds (as the rows' own tests), else Welch; each also in its row's
    ``secondary`` (by metric, for CSV). Returns them and a note per row whose variant no run recorded."""
    from ablate.report.verdicts import paired_or_welch, paired_values

    tests, missing = [], []
    for metric in metrics:
        lower_is_better(metric)  # an unknown metric is an error before any test
        for row in rows:
            base = row.base
            if base is None or base is row:
                continue
            row.secondary[metric] = None  # a CSV column even where it cannot be tested
            mine, theirs = variant(metric, row, key_metric), variant(metric, base, key_metric)
            x, y = _finite(row, mine), _finite(base, theirs)
            if not x or not y:
                missing.append(f"{row.setting}: {mine if not x else theirs} not recorded, not tested")
                continue
            a, b = paired_values(row, mine, over), paired_values(base, theirs, over)
            _, p, paired = paired_or_welch(a, b, x, y)
            test, n = ("paired t", f"{len(a)} pairs") if paired else ("Welch", f"{len(x)} vs {len(y)}")
            if math.isnan(p):
                missing.append(f"{row.setting}: {mine} vs {theirs} not testable (n < 2 or constant values)")
                continue
            diff = statistics.fmean(x) - statistics.fmean(y)
            tests.append(SecondaryTest(row.setting, mine, theirs, test, n, diff, p))
            row.secondary[metric] = tests[-1]
    return tests, missing


def _finite(row: Row, metric: str) -> list[float]:
    """The completed runs' finite values of ``metric``."""
    values = (run.metric(metric) for run in row.runs if run.status == "completed")
    return [v for v in values if v is not None and math.isfinite(v)]


def notes(tests: list[SecondaryTest], missing: list[str], family: int) -> list[str]:
    """The lines under the table: one per secondary test, with the size of the Holm family they were corrected in."""
    if not tests and not missing:
        return []
    head = f"Secondary metrics (Holm-corrected together with the rows' tests: {family} test{'s' * (family != 1)}):"
    return ["", head, "", *(t.line() for t in tests), *(f"- {m}" for m in missing)]
