"""The rules of the table command (``python -m ablate.table``): every option checked before any run is read, a bad
value one line naming the option (ConfigError, exit code 2). argparse converts the numbers with :func:`number_arg`."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ablate.config.metric_registry import DERIVED, is_known, parse
from ablate.errors import ConfigError

CURVE_COLUMNS = ("lr", "time")  # history.csv columns beside the metrics (ablate.runtime.history)
ALPHA = ("a number in (0, 1)", "--alpha 0.05", lambda a: 0.0 < a < 1.0)
STALE_AFTER = ("a positive number of seconds", "--stale-after 600", lambda s: 0.0 < s < math.inf)
EXPECTED_EFFECT = ("a nonzero number", "--expected-effect 0.005", lambda x: x != 0.0 and math.isfinite(x))
MARGIN = ("a positive number", "--margin 0.002", lambda m: 0.0 < m < math.inf)
CONVERGED_WINDOWS = ("tenths", "final_lr")  # the converged gate's windows (ablate.report.gates.WINDOWS)
TOLERANCE = ("a number in (0, 1)", "--converged 0.05", lambda t: 0.0 < t < 1.0)
MIN_GAP = ("a number in (0, 1)", "--overfits 0.02", lambda g: 0.0 < g < 1.0)
CONVERGED_TOLERANCE = 0.05  # --converged without a value: train/loss moved < 5% between the last two tenths of epochs


def number_arg(what: str, example: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse ``type``: a float that ``ok`` accepts, else argparse's one-line error."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isnan(value) or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}; e.g. {example}")
        return value

    return convert


def _check_metric(option: str, metric: str, extra: tuple[str, ...] = ()) -> None:
    if metric in extra or is_known(metric):
        return
    try:
        parse(metric)
    except ConfigError as err:
        also = f" (or {', '.join(extra)})" if extra else ""
        raise ConfigError(f"{option}: {err}{also}") from None


def _check_output(option: str, path: Path | None, figure: bool = False) -> None:
    """A file this command may create: not a folder, under a folder (not a file), writable; a figure's suffix is a
    format matplotlib writes."""
    if path is None:
        return
    example = f"{option} {'bars.png' if figure else 'table.md'}"
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name, e.g. {example}")
    parent = next(p for p in path.parents if p.exists() or p == p.parent)
    if not parent.is_dir():
        raise ConfigError(
            f"{option} {path}: {parent} is a file, not a folder; give a path under a folder, e.g. {example}"
        )
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{option} {path}: folder {parent} is not writable; e.g. {example}")
    if figure and path.suffix:
        from matplotlib.backend_bases import FigureCanvasBase

        formats = sorted(FigureCanvasBase.get_supported_filetypes())
        if path.suffix[1:].lower() not in formats:
            raise ConfigError(
                f"{option} {path}: matplotlib cannot write .{path.suffix[1:]}; use one of {', '.join(formats)}"
            )


def _check_setting(option: str, setting: str) -> None:
    bad = [t for t in setting.split() if "=" not in t and t != "(defaults)"]
    if bad or not setting.strip():
        raise ConfigError(f"{option} takes a setting as typed, key=value ..., got {setting!r}; e.g. {option} reg=none")


def check_table_args(args: argparse.Namespace) -> dict[str, str]:
    """Every option, before any run is read; returns the parsed --row-metric ({SETTING: METRIC})."""
    for root in args.root:
        if not root.exists():
            raise ConfigError(f"no such folder {root}; pass a run or multirun folder (logs/multiruns/<dir>)")
    for metric in args.metrics or []:
        _check_metric("--metrics", metric)
    for option in ("baseline_metric", "plot_metric"):
        if getattr(args, option):
            _check_metric(f"--{option.replace('_', '-')}", getattr(args, option))
    _check_metric("--curve-metric", args.curve_metric, CURVE_COLUMNS)
    row_metrics = _row_metrics(args.row_metric)
    if row_metrics and not args.baseline:
        raise ConfigError("--row-metric needs --baseline (it names what each row is tested with against the baseline)")
    for metric in getattr(args, "secondary_metric", None) or []:
        _check_metric("--secondary-metric", metric)
    if getattr(args, "secondary_metric", None) and not args.baseline:
        raise ConfigError("--secondary-metric needs --baseline (each row is tested against its baseline on it)")
    if args.baseline:
        _check_setting("--baseline", args.baseline)
    for setting in row_metrics:
        _check_setting("--row-metric", setting)
    _check_primary(args)
    _check_gates(args)
    if not [k for k in args.over.split(",") if k.strip()] and args.over.strip():
        raise ConfigError(f"--over takes comma-separated keys, got {args.over!r}; e.g. --over seed,fold")
    _check_output("--out", args.out)
    _check_output("--plot", args.plot, figure=True)
    _check_output("--curves", args.curves, figure=True)
    return row_metrics


def _row_metrics(specs: list[str]) -> dict[str, str]:
    """'SETTING:METRIC' -> {SETTING: METRIC}; the last ':' splits (metric names have none)."""
    out = {}
    for spec in specs:
        setting, sep, metric = spec.rpartition(":")
        if not sep or not setting.strip() or not metric.strip():
            raise ConfigError(f"--row-metric takes SETTING:METRIC, e.g. 'ensemble=swa:test/acc_swa'; got '{spec}'")
        _check_metric("--row-metric", metric.strip())
        out[setting.strip()] = metric.strip()
    return out


def _check_primary(args: argparse.Namespace) -> None:
    """--primary SETTING --expected-effect X --margin M: all three or none, with --baseline; the margin below the
    expected effect (else "equivalent within the margin" could hide the effect looked for); an accuracy's numbers as
    fractions, like results.json (0.005 = 0.5 points)."""
    given = {o: getattr(args, o.lstrip("-").replace("-", "_"), None) for o in ("--expected-effect", "--margin")}
    if getattr(args, "primary", None) is None:
        extra = [o for o, v in given.items() if v is not None]
        if extra:
            raise ConfigError(f"{', '.join(extra)} needs --primary SETTING (the comparison it describes)")
        return
    _check_setting("--primary", args.primary)
    if not args.baseline:
        raise ConfigError("--primary needs --baseline (the row it is compared with), e.g. --baseline reg=none")
    missing = [o for o, v in given.items() if v is None]
    if missing:
        raise ConfigError(
            f"--primary needs {' and '.join(missing)}, declared up front, e.g. --expected-effect 0.005 --margin 0.002"
        )
    effect, margin = given["--expected-effect"], given["--margin"]
    metric = args.baseline_metric or (args.metrics[0] if args.metrics else "test/acc")
    if ("acc" in metric or metric in DERIVED) and max(abs(effect), margin) >= 1:
        raise ConfigError(
            f"--expected-effect {effect:g} / --margin {margin:g}: {metric} is a fraction (as in results.json); "
            "give points / 100, e.g. --expected-effect 0.005 for +0.5 points"
        )
    if margin >= abs(effect):
        raise ConfigError(
            f"--margin {margin:g} must be smaller than |--expected-effect| {abs(effect):g}: an equivalence margin as "
            "large as the expected effect would call the effect itself 'no effect'"
        )


# -- gates (experiments/README.md "Verdict rule", step 0): checked on validation and training metrics only ------------
PRECONDITION_FUNCTIONS = ("spread", "mean", "min", "max")  # over the metrics a glob matches, per run
PRECONDITION_EXAMPLE = '--precondition "ensemble=snapshot: spread(val/acc_snapshot[0-9]*) <= 0.005"'
_PRECONDITION = re.compile(
    r"^(?P<setting>.*\S)\s*:\s*(?P<fn>\w+)\s*\(\s*(?P<glob>[^()\s]+)\s*\)\s*(?P<op><=|>=|<|>)\s*(?P<value>\S+)$"
)
_GLOB = re.compile(r"^(val|train)/[A-Za-z0-9_*?\[\]-]+$")


@dataclass(frozen=True)
class Precondition:
    """``SETTING: FUNCTION(GLOB) OP VALUE``: per completed run of the rows with SETTING, FUNCTION over the run's
    metrics matching GLOB (fnmatch) must satisfy OP VALUE (raw units: accuracies as fractions)."""

    text: str  # as given
    setting: str
    function: str  # spread | mean | min | max
    glob: str  # val/... or train/...: never test data
    op: str  # <= | < | >= | >
    value: float


def parse_precondition(text: str) -> Precondition:
    """The strict parser of --precondition (and a plan's gates.preconditions): anything else is a ConfigError."""
    match = _PRECONDITION.match(text.strip())
    accepted = (
        f"takes 'SETTING: FUNCTION(METRICS) OP NUMBER' with FUNCTION {'|'.join(PRECONDITION_FUNCTIONS)}, "
        f"OP <=|<|>=|> and METRICS a val/ or train/ glob"
    )
    if match is None:
        raise ConfigError(f"--precondition {accepted}, got {text!r}; e.g. {PRECONDITION_EXAMPLE}")
    setting, fn, glob, op, value = match.group("setting", "fn", "glob", "op", "value")
    if fn not in PRECONDITION_FUNCTIONS:
        raise ConfigError(f"--precondition {text!r}: unknown function {fn!r}; {accepted}; e.g. {PRECONDITION_EXAMPLE}")
    if not _GLOB.match(glob):
        raise ConfigError(
            f"--precondition {text!r}: {glob!r} is not a val/ or train/ metric glob (gates read validation and "
            f"training metrics only, never test); e.g. {PRECONDITION_EXAMPLE}"
        )
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"--precondition {text!r}: {value!r} is not a finite number; e.g. {PRECONDITION_EXAMPLE}")
    if "acc" in glob and abs(number) > 1:
        raise ConfigError(
            f"--precondition {text!r}: accuracies are fractions (as in results.json); give points / 100, "
            f"e.g. {PRECONDITION_EXAMPLE} for 0.5 points"
        )
    _check_setting("--precondition", setting)
    return Precondition(text=text.strip(), setting=setting, function=fn, glob=glob, op=op, value=number)


def _check_gates(args: argparse.Namespace) -> None:
    """--converged and --overfits check the baseline: they need --baseline; every --precondition parses."""
    for option in ("converged", "overfits"):
        if getattr(args, option, None) is not None and not args.baseline:
            raise ConfigError(f"--{option} checks the baseline's runs: it needs --baseline, e.g. --baseline reg=none")
    if getattr(args, "converged_window", None) and getattr(args, "converged", None) is None:
        raise ConfigError("--converged-window needs --converged (the gate whose window it sets)")
    for text in getattr(args, "precondition", None) or []:
        parse_precondition(text)
