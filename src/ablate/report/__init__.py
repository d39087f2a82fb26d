"""Sweeps -> tables and figures, used by ``python -m ablate.table`` and notebooks/analysis.ipynb.

runs = load_runs("logs/multiruns/<dir>")                  # runs.py: results.json -> Run
rows = build(runs, ["test/acc"], baseline="reg=none")     # stats.py + verdicts.py: rows, Holm-corrected verdicts
#   (secondary_metrics=["test/nll"]: each row also tested on those, in row.secondary, as --secondary-metric)
print(render(rows, ["test/acc"], "md", "test/acc"))       # render.py: md | csv | latex
plot_bars(rows, "test/acc", "bars.png"); plot_curves(rows, "val/acc", "curves.png")   # plots.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ablate.errors import ConfigError
from ablate.report.plots import plot_bars, plot_curves
from ablate.report.reference import load_reference
from ablate.report.render import render
from ablate.report.runs import NON_SETTING_KEYS, STALE_AFTER_S, Run, load_runs, read_history
from ablate.report.secondary import secondary_tests
from ablate.report.stats import Row, available_metrics, baseline_first, fill_defaults, join_reference, summarize
from ablate.report.verdicts import apply_holm, compare

__all__ = [
    "NON_SETTING_KEYS",
    "Row",
    "Run",
    "available_metrics",
    "build",
    "load_all",
    "load_reference",
    "load_runs",
    "plot_bars",
    "plot_curves",
    "read_history",
    "render",
]


def load_all(roots: list[str | Path] | list[Path], stale_after: float = STALE_AFTER_S) -> list[Run]:
    """The runs under every root (a run found twice, through nested roots, counted once), named so that runs of
    different folders line up by setting (``fill_defaults``)."""
    runs, seen = [], set()
    for root in roots:
        for run in load_runs(root, stale_after=stale_after):  # a root without runs is its one-line error
            if run.path.resolve() not in seen:
                seen.add(run.path.resolve())
                runs.append(run)
    return fill_defaults(runs) if len(runs) > 1 else runs


def build(
    runs: list[Run],
    metrics: list[str],
    over: tuple[str, ...] | list[str] = ("seed",),
    baseline: str | None = None,
    baseline_metric: str | None = None,
    alpha: float = 0.05,
    reference: str | Path | dict[str, Any] | None = None,
    row_metrics: dict[str, str] | None = None,
    secondary_metrics: list[str] | tuple[str, ...] = (),
) -> list[Row]:
    """Rows with mean/std/n per metric; with ``baseline``, Holm-corrected verdicts (paired by seed where the rows
    share seeds, else Welch) on ``baseline_metric`` (default: the
    first metric; ``row_metrics``: a setting's own metric for that test), the baseline row first (in a factorial
    sweep, each group's baseline before its rows); with ``reference`` (a reference.yaml path or its loaded dict), the
    paper's numbers joined. ``secondary_metrics`` (as ``--secondary-metric``, with a baseline): every row also
    tested on those, Holm-corrected in one family with the rows' tests; each test in ``row.secondary[metric]``
    (ablate.report.secondary.SecondaryTest: ``diff``, ``p``, ``p_holm``, ``verdict``, ``line()``)."""
    rows = summarize(runs, list(metrics), tuple(over))
    if baseline:
        key_metric = baseline_metric or metrics[0]
        compare(rows, baseline, key_metric, alpha, row_metrics, tuple(over))
        if secondary_metrics:
            tests, _ = secondary_tests(rows, list(secondary_metrics), key_metric, tuple(over))
            apply_holm(rows, alpha, None, tests)
        rows = baseline_first(rows)
    elif secondary_metrics:
        raise ConfigError("secondary_metrics need a baseline to test against; pass baseline='<setting>'")
    if reference is not None:
        ref = reference if isinstance(reference, dict) else load_reference(reference)
        join_reference(rows, ref)
    return rows
