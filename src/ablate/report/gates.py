"""Gates before a verdict (experiments/README.md "Verdict rule", step 0): can these runs test the paper's claim?

Checked on training and validation data only, never test, each on the completed runs of the rows it names:

- ``converged`` (the baseline): each run's train/loss plateaued. From history.csv, the mean train/loss over the last
  tenth of the epochs (at least 2) against the tenth before: relative change |before - last| / max(before, 0.02)
  below the tolerance (default 5%). The floor: a loss near 0 (a network that fits its training set) moves by a
  large fraction of itself while changing by under 0.001 nats, which is a plateau. A run without enough epochs
  (2 x 2) or without history.csv cannot be checked: failed. With ``window: final_lr`` the two halves of the final
  constant-learning-rate phase are compared instead (history.csv's lr column: the trailing epochs at the last epoch's
  lr), for schedules that decay until near the end (the SWA paper's SGD decays until 90% of the budget, so the last
  two tenths straddle the end of the decay); a final phase under 4 epochs cannot be checked.
- ``overfits`` (the baseline, for claims about regularization): the mean over its runs of val_gap =
  train/acc_eval - val/acc (the final weights in eval mode) is at least the minimum. A run without train/acc_eval
  (recorded before it existed) cannot be checked: failed.
- ``precondition`` (the rows named): the paper's own condition, e.g. snapshot models within 0.5 points of each other
  on validation: ``ensemble=snapshot: spread(val/acc_snapshot[0-9]*) <= 0.005``, a function (spread = max - min,
  mean, min, max) over each run's metrics matching a glob, compared per run (parsed by
  ablate.config.rules.table.parse_precondition).

A failed gate is reported instead of the primary verdict (``verdict: gate failed (...)``): the runs cannot decide
the claim. Each gate is one line under the table: the gate, the rows checked, the measured values, pass / fail.
"""

from __future__ import annotations

import math
import operator
import statistics
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from ablate.config.rules.table import CONVERGED_TOLERANCE, Precondition
from ablate.errors import ConfigError
from ablate.report.runs import EVAL_TRAIN_ACC, Run, normalize, read_history
from ablate.report.stats import Row, find_row, is_accuracy

TAIL = 0.1  # the fraction of epochs compared with the same fraction before it
MIN_TAIL_EPOCHS = 2
OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
FUNCTIONS = {"spread": lambda v: max(v) - min(v), "mean": statistics.fmean, "min": min, "max": max}


@dataclass
class GateSpec:
    """The gates an experiment declares (--converged, --overfits, --precondition, or a plan's ``gates``)."""

    converged: float | None = None  # tolerance on the relative change of train/loss; None: not checked
    overfits: float | None = None  # minimum mean val_gap of the baseline; None: not checked
    preconditions: list[Precondition] = field(default_factory=list)
    converged_window: str = "tenths"  # tenths | final_lr (see plateau_change, final_lr_change)

    def __bool__(self) -> bool:
        return self.converged is not None or self.overfits is not None or bool(self.preconditions)


@dataclass
class Gate:
    name: str  # converged | overfits | precondition
    rows: str  # the rows checked, with their completed runs
    measured: str  # the measured value(s), in words
    passed: bool
    failure: str = ""  # why it failed, for the verdict line ("baseline not converged: ...")

    def line(self) -> str:
        return f"- gate {self.name} ({self.rows}): {self.measured}: **{'pass' if self.passed else 'FAIL'}**"


def _completed(row: Row) -> list[Run]:
    return [r for r in row.runs if r.status == "completed"]


def _checked(row: Row) -> str:
    n = len(_completed(row))
    return f"{row.setting}, {n} run{'s' * (n != 1)}"


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


# Relative changes are taken against at least this loss (nats): below it, 5% is under 0.001 nats (see the docstring).
LOSS_FLOOR = 0.02


def plateau_change(losses: list[float]) -> tuple[float, int] | str:
    """(relative change of the mean loss, last tenth vs the tenth before; epochs per tenth), or why it cannot be
    measured. A tenth is at least 2 epochs, so a run needs 4 epochs with a finite train/loss."""
    k = max(MIN_TAIL_EPOCHS, math.ceil(TAIL * len(losses)))
    if len(losses) < 2 * k:
        return f"{len(losses)} epochs with a train/loss, needs {2 * MIN_TAIL_EPOCHS}+"
    return _last_vs_before(losses, k), k


def _last_vs_before(losses: list[float], k: int) -> float:
    """Relative change of the mean loss over the last ``k`` epochs against the ``k`` before (floored, LOSS_FLOOR)."""
    before, last = statistics.fmean(losses[-2 * k : -k]), statistics.fmean(losses[-k:])
    return abs(before - last) / max(abs(before), LOSS_FLOOR)


def final_lr_change(losses: list[float], lrs: list[float]) -> tuple[float, int] | str:
    """(relative change of the mean loss, second half of the final constant-lr phase vs the first; epochs per half),
    or why it cannot be measured. The phase: the trailing epochs whose lr equals the last epoch's."""
    phase = 0
    for lr in reversed(lrs):
        if not math.isclose(lr, lrs[-1], rel_tol=1e-6, abs_tol=1e-12):
            break
        phase += 1
    k = phase // 2
    if k < MIN_TAIL_EPOCHS:
        return f"final constant-lr phase of {phase} epoch{'s' * (phase != 1)}, needs {2 * MIN_TAIL_EPOCHS}+"
    return _last_vs_before(losses, k), k


WINDOWS = {  # the names are ablate.config.rules.table.CONVERGED_WINDOWS (the options'); here, what each measures
    "tenths": "last {k} epochs vs the {k} before",
    "final_lr": "the final constant-lr phase, last {k} epochs vs the {k} before",
}


def converged(row: Row, tolerance: float = CONVERGED_TOLERANCE, window: str = "tenths") -> Gate:
    """The baseline's train/loss plateaued in every completed run (history.csv), over the ``window`` (WINDOWS)."""
    if window not in WINDOWS:
        raise ConfigError(f"unknown converged window {window!r}; known: {', '.join(WINDOWS)}")
    changes, problems, tenths = [], [], set()
    for run in _completed(row):
        history = read_history(run)
        kept = [h for h in history if math.isfinite(h.get("train/loss", math.nan))]
        losses = [h["train/loss"] for h in kept]
        if not history:
            measured = "no history.csv"
        elif window == "final_lr":
            lrs = [h.get("lr", math.nan) for h in kept]
            measured = final_lr_change(losses, lrs) if all(map(math.isfinite, lrs)) else "no lr in history.csv"
        else:
            measured = plateau_change(losses)
        if isinstance(measured, str):
            problems.append(f"{run.run_dir.name}: {measured}")
            continue
        changes.append(measured[0])
        tenths.add(measured[1])
    if not changes and not problems:
        problems.append("no completed run")
    span = "/".join(map(str, sorted(tenths))) or "?"
    measured = f"train/loss change, {WINDOWS[window].format(k=span)}: "
    measured += ", ".join(_pct(c) for c in changes) or "-"
    measured += f" (< {_pct(tolerance)} required)"
    if problems:
        measured += "; cannot be checked: " + "; ".join(problems)
    worst = max(changes, default=math.nan)
    passed = not problems and worst < tolerance
    failure = ""
    if not passed:
        why = "cannot be checked: " + "; ".join(problems) if problems else f"train/loss still moving {_pct(worst)}"
        failure = f"baseline {row.setting} not converged: {why}"
    return Gate("converged", _checked(row), measured, passed, failure)


def overfits(row: Row, min_gap: float) -> Gate:
    """The baseline overfits: mean over its runs of train/acc_eval - val/acc >= ``min_gap``."""
    runs = _completed(row)
    gaps = [g for g in (r.metric("val_gap") for r in runs) if g is not None and math.isfinite(g)]
    missing = [r.run_dir.name for r in runs if r.metric("val_gap") is None]
    mean = statistics.fmean(gaps) if gaps else math.nan
    measured = f"{EVAL_TRAIN_ACC} - val/acc: mean {mean * 100:.2f} points (>= {min_gap * 100:.2f} required)"
    if missing or not runs:
        measured += f"; cannot be checked: no {EVAL_TRAIN_ACC} or val/acc in {', '.join(missing) or 'any run'}"
    passed = bool(gaps) and not missing and mean >= min_gap
    failure = ""
    if not passed:
        why = f"{EVAL_TRAIN_ACC} - val/acc = {mean * 100:.2f} points < {min_gap * 100:.2f}"
        if missing or not runs:
            why = f"cannot be checked, no {EVAL_TRAIN_ACC} or val/acc in {', '.join(missing) or 'any run'}"
        failure = f"baseline {row.setting} does not overfit: {why}"
    return Gate("overfits", _checked(row), measured, passed, failure)


def rows_for(rows: list[Row], setting: str) -> list[Row]:
    """The row named ``setting``; else every row whose setting includes it (``ensemble=snapshot`` in a factorial
    sweep: one row per other setting). None: a ConfigError listing the settings."""
    row = find_row(rows, setting)
    if row is not None:
        return [row]
    wanted = frozenset(normalize(t) for t in setting.split())
    found = [r for r in rows if wanted <= r.key | r.shared]
    if not found:
        names = "; ".join(r.setting for r in rows)
        raise ConfigError(f"no row with setting '{setting}' for --precondition; settings: {names}")
    return found


def precondition(row: Row, pre: Precondition) -> Gate:
    """Per completed run: FUNCTION over its metrics matching the glob, compared with the value."""
    runs = _completed(row)
    matched = sorted({m for r in runs for m in r.metrics if fnmatchcase(m, pre.glob)})
    if runs and not matched:
        known = sorted({m for r in runs for m in r.metrics if m.startswith(pre.glob.split("/")[0] + "/")})
        raise ConfigError(
            f"--precondition {pre.text!r}: no metric of {row.setting} matches {pre.glob}; its metrics: "
            f"{', '.join(known) or '(none)'}"
        )
    families = sorted({m.rstrip("0123456789") for m in matched})
    if len(families) > 1:  # val/acc_snapshot* also matches the ensembles' val/acc_snapshot_ens<m>: never silently
        raise ConfigError(
            f"--precondition {pre.text!r}: {pre.glob} matches metrics of {len(families)} kinds "
            f"({', '.join(f + '*' for f in families)}); narrow it to one, e.g. val/acc_snapshot[0-9]*"
        )
    acc = is_accuracy(pre.glob)
    show = (lambda v: f"{v * 100:.2f}") if acc else (lambda v: f"{v:.4g}")
    values, problems = [], []
    for run in runs:
        got = [float(run.metrics[m]) for m in matched if m in run.metrics]
        if not got or not all(math.isfinite(v) for v in got):
            problems.append(f"{run.run_dir.name}: {'non-finite values' if got else 'none of them'}")
            continue
        values.append(FUNCTIONS[pre.function](got))
    if not runs:
        problems.append("no completed run")
    unit = " points" if acc else ""
    names = f"{matched[0]}..{matched[-1]}" if len(matched) > 2 else ", ".join(matched)
    over = f"{len(matched)} metrics ({names})" if len(matched) > 1 else names or pre.glob
    measured = f"{pre.function} of {over} per run: "
    measured += ", ".join(show(v) for v in values) or "-"
    measured += f"{unit} ({pre.op} {show(pre.value)}{unit} required)"
    if problems:
        measured += "; cannot be checked: " + "; ".join(problems)
    bad = [v for v in values if not OPS[pre.op](v, pre.value)]
    passed = not problems and not bad
    failure = ""
    if not passed:
        why = "; ".join(problems) if problems else f"{pre.function} = {show(max(bad, key=abs))}{unit}"
        failure = f"precondition {pre.text!r} not met: {why}"
    return Gate(
        f"precondition {pre.function}({pre.glob}) {pre.op} {pre.value:g}", _checked(row), measured, passed, failure
    )


def check_gates(rows: list[Row], spec: GateSpec, primary: Row | None = None) -> list[Gate]:
    """Every declared gate, one result per row checked. The baseline gates check the --primary row's baseline,
    else every baseline row (after ``compare``)."""
    gates: list[Gate] = []
    if spec.converged is not None or spec.overfits is not None:
        bases = [primary.base] if primary is not None else [r for r in rows if r.base is r]
        for base in bases:
            if spec.converged is not None:
                gates.append(converged(base, spec.converged, spec.converged_window))
            if spec.overfits is not None:
                gates.append(overfits(base, spec.overfits))
    for pre in spec.preconditions:
        gates += [precondition(row, pre) for row in rows_for(rows, pre.setting)]
    return gates
