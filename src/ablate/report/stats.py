"""Runs -> rows: one row per setting with mean, std and n of each metric over the pooled keys (seeds, folds),
completed runs only; the others are counted by status. Verdicts against a baseline: ``verdicts`` (Welch's t-test,
Holm-corrected; the primary comparison's yes / no / inconclusive, experiments/README.md "Verdict rule")."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

from ablate.config import metric_registry
from ablate.errors import ConfigError
from ablate.report.runs import (
    DERIVED,
    EVAL_TRAIN_ACC,
    NON_SETTING_KEYS,
    STATUSES,
    Run,
    matches_over,
    normalize,
    override_key,
)


def is_accuracy(metric: str) -> bool:
    """Shown in %: accuracies (and the accuracy gaps); losses, NLL, ECE, ... as recorded."""
    return "acc" in metric or metric in DERIVED


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
    p_holm: float = math.nan  # Holm-adjusted over the secondary rows (NaN for the baseline and the primary row)
    test: str = ""  # "Welch" | "paired t" (the primary row, when both arms share seeds) | "" (not tested)
    primary: Any = None  # verdicts.Primary on the --primary row: yes / no / inconclusive, CI, MDE
    reference: dict[str, float] = field(default_factory=dict)
    shared: frozenset[str] = frozenset()  # overrides every run has, left out of the name
    exact: str = ""  # the name with every value as recorded (CSV); ``setting`` rounds long floats for reading
    base: Row | None = field(default=None, repr=False)  # the row this one was tested against (see ``compare``)
    secondary: dict[str, Any] = field(default_factory=dict)  # --secondary-metric -> secondary.SecondaryTest

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.runs) for s in STATUSES}

    @property
    def n(self) -> int:
        return self.counts["completed"]


def available_metrics(runs: list[Run]) -> list[str]:
    """Recorded metrics of the completed runs, then the derived gaps whose inputs some run recorded (``gap``: test/acc
    and train/acc_eval or train/acc; ``val_gap``: val/acc and train/acc_eval)."""
    names = sorted({m for r in runs if r.status == "completed" for m in r.metrics})
    trains = {EVAL_TRAIN_ACC, "train/acc"}
    derived = [
        d
        for d, held_out in DERIVED.items()
        if held_out in names and (trains if d == "gap" else {EVAL_TRAIN_ACC}) & {*names}
    ]
    return names + derived


def gap_from_train_mode(rows: list[Row]) -> int:
    """How many completed runs of ``rows`` have a ``gap`` from training-mode train/acc (recorded before
    train/acc_eval existed); the table says so under itself."""
    return sum(r.gap_from_train_mode for row in rows for r in row.runs if r.status == "completed")


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
                run.filled.add(normalize(run.overrides[-1]))
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
    that every run shares may be included or left out. Defaults that only other folders' runs typed may be left out
    too (fill_defaults names them): ``ensemble=none`` finds ``ensemble=none trainer.max_epochs=40`` when a second
    sweep set ``trainer.max_epochs=60``, if it is the only row with ``ensemble=none`` (a plan declared before the runs
    cannot know those names). ``key=*`` stands for any value of that key, for a value chosen after the plan was
    written (``optimizer=adam optimizer.lr=*``: the rate a grid search picked); it too must name one row alone."""
    for row in rows:
        if setting in (row.setting, row.exact):
            return row
    tokens = setting.split()
    free = {override_key(t) for t in tokens if t.split("=", 1)[-1] == "*"}
    wanted = frozenset(normalize(t) for t in tokens if override_key(t) not in free)
    if not free:
        found = next((r for r in rows if r.key <= wanted and wanted - r.key <= r.shared), None)
        if found is not None:
            return found
    containing = [r for r in rows if wanted <= r.key | r.shared]
    if len(containing) == 1:
        extra = containing[0].key - wanted
        if {t for t in extra if override_key(t) not in free} <= _filled(containing[0]):
            return containing[0]
    return None


def _filled(row: Row) -> set[str]:
    """The overrides that fill_defaults named (not typed) in every run of the row."""
    return set.intersection(*(run.filled for run in row.runs)) if row.runs else set()


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
