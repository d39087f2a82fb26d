"""The options of ``python -m ablate.table`` (ablate.report.table): argparse with one-line errors; the values are
checked in ablate.config.rules.table, the one place that knows their ranges."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from ablate.config.rules.table import (
    ALPHA,
    CONVERGED_TOLERANCE,
    CONVERGED_WINDOWS,
    EXPECTED_EFFECT,
    MARGIN,
    MIN_GAP,
    STALE_AFTER,
    TOLERANCE,
    number_arg,
)
from ablate.errors import ConfigError

# Those the runs recorded. train/acc is the running training-mode accuracy, train/acc_eval the final weights in eval
# mode (the gap's train side; runs recorded before it have train/acc only).
DEFAULT_METRICS = ["train/acc", "train/acc_eval", "test/acc", "gap", "test/nll", "test/ece"]
DEFAULTS = {"alpha": 0.05, "over": "seed"}  # applied after --plan, so that a plan's value is not taken as given


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (``error: argument --alpha: ...``) and exit code 2, like ConfigError."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}; see python -m ablate.table --help", file=sys.stderr)
        sys.exit(ConfigError.exit_code)


def parser(description: str) -> argparse.ArgumentParser:
    """The table command's options; ``description`` is its --help text (ablate.report.table's docstring)."""
    p = _Parser(
        prog="python -m ablate.table", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("root", type=Path, nargs="+", help="folders holding results.json files (a run, a multirun, several)")
    p.add_argument("--metrics", nargs="+", help=f"metrics to show (default: {' '.join(DEFAULT_METRICS)}, if recorded)")
    p.add_argument("--format", choices=["md", "csv", "latex"], default="md")
    p.add_argument("--plan", type=Path, help="the experiment's declaration (plan.yaml; options given here override it)")
    p.add_argument("--over", help="comma-separated keys pooled within a row (default: seed)")
    p.add_argument(
        "--baseline", help="the setting to compare against, as typed, e.g. 'reg=none'; 'key=*' leaves key's value open"
    )
    p.add_argument("--baseline-metric", help="metric of the t-test (default: first --metrics given, else test/acc)")
    p.add_argument(
        "--row-metric",
        action="append",
        default=[],
        metavar="SETTING:METRIC",
        help="test this setting's METRIC against the baseline's metric (repeatable), e.g. 'ensemble=swa:test/acc_swa'",
    )
    p.add_argument(
        "--secondary-metric",
        action="append",
        default=[],
        metavar="METRIC",
        help="also test every row against its baseline on METRIC (repeatable), each row on its --row-metric variant "
        "(ensemble=swa: test/nll -> test/nll_swa), Holm-corrected with the rows' tests, e.g. test/nll",
    )
    p.add_argument(
        "--alpha",
        type=number_arg(*ALPHA),
        help="significance level of the t-test (default 0.05)",
    )
    p.add_argument("--primary", metavar="SETTING", help="the primary comparison: this row vs --baseline (a verdict)")
    p.add_argument(
        "--expected-effect",
        type=number_arg(*EXPECTED_EFFECT),
        metavar="X",
        help="with --primary: the paper's expected effect, > 0 = better, raw units (accuracy 0.005 = 0.5 points)",
    )
    p.add_argument(
        "--margin",
        type=number_arg(*MARGIN),
        metavar="M",
        help="with --primary: equivalence margin, declared up front (|difference| < M counts as no effect)",
    )
    p.add_argument(
        "--converged",
        type=number_arg(*TOLERANCE),
        nargs="?",
        const=CONVERGED_TOLERANCE,
        metavar="TOL",
        help=f"gate: the baseline's train/loss plateaued (relative change < TOL, default {CONVERGED_TOLERANCE:g})",
    )
    p.add_argument(
        "--converged-window",
        choices=CONVERGED_WINDOWS,
        help="with --converged: compare the last tenth of the epochs with the tenth before (tenths, the default), or "
        "the halves of the final constant-lr phase (final_lr: schedules that decay until near the end)",
    )
    p.add_argument(
        "--overfits",
        type=number_arg(*MIN_GAP),
        metavar="MIN",
        help="gate: the baseline overfits, mean train/acc_eval - val/acc >= MIN (a fraction: 0.02 = 2 points)",
    )
    p.add_argument(
        "--precondition",
        action="append",
        default=[],
        metavar="SPEC",
        help="gate (repeatable): 'SETTING: spread|mean|min|max(VAL_GLOB) <=|<|>=|> X' per run, e.g. "
        "'ensemble=snapshot: spread(val/acc_snapshot[0-9]*) <= 0.005'",
    )
    p.add_argument("--reference", type=Path, help="reference.yaml with a paper's numbers to join")
    p.add_argument("--plot", type=Path, help="write a bar chart (mean ± std per setting) to this PNG (or .pdf, .svg)")
    p.add_argument("--plot-metric", help="metric of --plot (default: the baseline metric)")
    p.add_argument("--curves", type=Path, help="write validation curves per setting (from history.csv) to this PNG")
    p.add_argument("--curve-metric", default="val/acc", help="history.csv column for --curves (default val/acc)")
    p.add_argument(
        "--stale-after",
        type=number_arg(*STALE_AFTER),
        default=600.0,
        help="seconds without heartbeat: interrupted (default 600)",
    )
    p.add_argument("--out", type=Path, help="also write the table (without the prose line) here")
    return p
