"""Runs -> rows: one row per setting with mean, std and n of each metric over the pooled keys (seeds, folds),
completed runs only; the others are counted by status. Verdicts against a baseline are Welch's t-test."""

from __future__ import annotations

import math
import statistics
import warnings
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

from ablate.config import metric_registry
from ablate.errors import ConfigError
from ablate.report.runs import NON_SETTING_KEYS, STATUSES, Run, matches_over, normalize, override_key

DERIVED = ("gap",)  # gap = train/acc - test/acc


def is_accuracy(metric: str) -> bool:
    """Shown in %: accuracies (and the train-test accuracy gap); losses, NLL, ECE, ... as recorded."""
    return "acc" in metric or metric == "gap"


def lower_is_better(metric: str) -> bool:
    """The metric registry's direction (better/worse wording); a metric it does not know is a ConfigError."""
    return metric_registry.lower_is_better(metric)


@dataclass
class Stat:
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1); NaN for n < 2, where it does not exist."""
        return statistics.stdev(self.values) if self.n > 1 else math.nan


@dataclass
class Row:
    setting: str  # as the user typed it
    key: frozenset[str]  # normalised overrides, for matching
    runs: list[Run]
    stats: dict[str, Stat] = field(default_factory=dict)
    verdict: str | None = None  # better | worse | n.s. | baseline | None (not testable)
    compared: str | None = None  # the metric the verdict tested for this row (see compare's row_metrics)
    t: float = math.nan
    p: float = math.nan
    reference: dict[str, float] = field(default_factory=dict)
    shared: frozenset[str] = frozenset()  # overrides every run has, left out of the name
    exact: str = ""  # the name with every value as recorded (CSV); ``setting`` rounds long floats for reading
    base: Row | None = field(default=None, repr=False)  # the row this one was tested against (see ``compare``)

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.runs) for s in STATUSES}

    @property
    def n(self) -> int:
        return self.counts["completed"]


def available_metrics(runs: list[Run]) -> list[str]:
    names = sorted({m for r in runs if r.status == "completed" for m in r.metrics})
    return names + [d for d in DERIVED if "train/acc" in names and "test/acc" in names]


def fill_defaults(runs: list[Run]) -> list[Run]:
    """Name what a run left at its default when other runs set it, so runs of different folders line up by setting.

    A sweep of ``seed=0,1,2`` beside one of ``ensemble=swa seed=0,1,2`` gives rows ``ensemble=none`` and
    ``ensemble=swa`` instead of ``(defaults)`` and ``ensemble=swa``. A config group's choice comes from the run's
    ``.hydra/hydra.yaml`` (``hydra.runtime.choices``), a dotted key from the resolved config in results.json; a run
    without either (hand-written results.json) is left as it is. Changes the runs' ``overrides`` in place."""
    keys = {override_key(o) for r in runs for o in r.overrides if "=" in o and not o.startswith(("+", "~"))}
    keys = {k for k in keys if not any(k == p or k.startswith((f"{p}.", f"{p}/")) for p in NON_SETTING_KEYS)}
    for run in runs:
        missing = sorted(keys - {override_key(o) for o in run.overrides})
        for key in missing:
            value = _group_choice(run, key) if "." not in key else _config_value(run.data.get("config"), key)
            if value is not _ABSENT:
                run.overrides.append(f"{key}={_spell(value)}")
    return runs


_ABSENT = object()


@cache
def _choices(run_dir: Path) -> dict[str, Any]:
    """hydra.runtime.choices of a run's .hydra/hydra.yaml ({} without one)."""
    import yaml

    try:
        choices = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return {}
    return choices if isinstance(choices, dict) else {}


def _group_choice(run: Run, key: str) -> Any:
    """A config group's choice; a plain key (``seed``, ``test_weights``) from the resolved config."""
    choices = _choices(run.run_dir)
    return choices[key] if key in choices else _config_value(run.data.get("config"), key)


def _config_value(config: Any, key: str) -> Any:
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return _ABSENT if isinstance(node, dict) else node


def _spell(value: Any) -> str:
    """A value as a Hydra override writes it (null, true, [a,b])."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list | tuple):
        return "[" + ",".join(_spell(v) for v in value) + "]"
    return str(value)


def check_metrics(runs: list[Run], metrics: list[str]) -> None:
    known = available_metrics(runs)
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ConfigError(f"unknown metric {', '.join(unknown)}; available: {', '.join(known) or '(none)'}")


def check_over(runs: list[Run], over: tuple[str, ...], default: tuple[str, ...] = ("seed",)) -> None:
    keys = sorted({override_key(o) for r in runs for o in r.overrides})
    missing = [o for o in over if o not in default and not any(matches_over(k, (o,)) for k in keys)]
    if missing:
        raise ConfigError(
            f"unknown grouping key {', '.join(missing)} in --over; override keys of these runs: {', '.join(keys)}"
        )


SIGNIFICANT_DIGITS = 4  # a float override in a row's name (Optuna's lr=0.0031622776601683794 -> 0.003162)


def short_value(override: str) -> str:
    """``key=<float>`` with more than 4 significant digits -> 4 (``%.4g``); anything else as written."""
    key, sep, value = override.partition("=")
    if not sep or not any(c in value for c in ".eE") or value.strip().lower() in ("inf", "-inf", "nan"):
        return override
    try:
        digits = Decimal(value.strip()).normalize().as_tuple().digits
    except InvalidOperation:  # not a number (a path, a list, a name)
        return override
    return f"{key}={float(value):.{SIGNIFICANT_DIGITS}g}" if len(digits) > SIGNIFICANT_DIGITS else override


def group(runs: list[Run], over: tuple[str, ...] = ("seed",)) -> list[Row]:
    """One row per setting; overrides that every run shares are left out of the names (they would only repeat).
    Long floats are named with 4 significant digits, unless two rows would then share a name."""
    tokens = [r.setting_tokens(over) for r in runs]
    common = set.intersection(*(set(t) for t in tokens)) if len(runs) > 1 else set()
    rows: dict[frozenset[str], Row] = {}
    for run, toks in zip(runs, tokens, strict=True):
        key = frozenset(t for t in toks if t not in common)
        if key not in rows:
            shown = sorted(toks[t] for t in key)
            label = " ".join(short_value(t) for t in shown) or "(defaults)"
            rows[key] = Row(setting=label, key=key, runs=[], shared=frozenset(common), exact=" ".join(shown) or label)
        rows[key].runs.append(run)
    clashes = Counter(r.setting for r in rows.values())
    for row in rows.values():
        if clashes[row.setting] > 1:  # rounding merged two names: show these exactly
            row.setting = row.exact
    return sorted(rows.values(), key=lambda r: r.setting)


def baseline_first(rows: list[Row]) -> list[Row]:
    """Each baseline row first, followed by the rows tested against it; rows without a baseline last."""
    order = {id(r): i for i, r in enumerate(rows)}

    def rank(row: Row) -> tuple[int, int, int]:
        if row.base is None:
            return (len(rows), 1, order[id(row)])
        return (order[id(row.base)], row.base is not row, order[id(row)])

    return sorted(rows, key=rank)


def summarize(runs: list[Run], metrics: list[str], over: tuple[str, ...] = ("seed",)) -> list[Row]:
    check_metrics(runs, metrics)
    check_over(runs, tuple(over))
    rows = group(runs, tuple(over))
    for row in rows:
        done = [r for r in row.runs if r.status == "completed"]
        for m in metrics:
            row.stats[m] = Stat([v for v in (r.metric(m) for r in done) if v is not None and math.isfinite(v)])
    return rows


def find_row(rows: list[Row], setting: str) -> Row | None:
    """The row named ``setting`` as typed, or with the same override values (``1e9`` == ``1000000000.0``); overrides
    that every run shares may be included or left out."""
    for row in rows:
        if setting in (row.setting, row.exact):
            return row
    wanted = frozenset(normalize(t) for t in setting.split())
    return next((r for r in rows if r.key <= wanted and wanted - r.key <= r.shared), None)


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


def join_reference(rows: list[Row], reference: dict[str, Any]) -> list[str]:
    """Attach a paper's numbers to the matching rows; returns the reference settings that matched no row."""
    unmatched = []
    for setting, values in reference["rows"].items():
        row = find_row(rows, setting)
        if row is None:
            unmatched.append(setting)
        else:
            row.reference = dict(values)
    return unmatched
