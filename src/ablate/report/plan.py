"""An experiment's declaration, written once: ``--plan experiments/<name>/plan.yaml``.

Its keys mirror the table's options (underscores for dashes); an option given on the command line overrides the
plan's value. An unknown key is a ConfigError naming the known ones.

    baseline: ensemble=none
    baseline_metric: test/acc
    row_metric: {ensemble=swa: test/acc_swa}     # or a list of "SETTING:METRIC"
    secondary_metric: [test/nll, test/ece]       # each row on its own variant (test/nll_swa), Holm with the rows
    primary: ensemble=swa
    expected_effect: 0.003                       # raw units: accuracies as fractions
    margin: 0.001
    over: seed                                   # or a list of keys
    gates:
      converged: {tolerance: 0.05}               # or `true` for the default tolerance; `window: final_lr` compares
                                                 # the halves of the final constant-lr phase (default: tenths)
      overfits: {min_gap: 0.02}
      preconditions:
        - "ensemble=swa: min(val/acc_swa) >= 0.5"

Also accepted: ``metrics`` (a list), ``alpha``, ``reference`` (a path, relative to the folder the command runs in,
like the option).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ablate.config.rules.table import (
    ALPHA,
    CONVERGED_TOLERANCE,
    CONVERGED_WINDOWS,
    EXPECTED_EFFECT,
    MARGIN,
    MIN_GAP,
    TOLERANCE,
    number_arg,
)
from ablate.errors import ConfigError

TEXT_KEYS = ("baseline", "baseline_metric", "primary")
NUMBER_KEYS = {"alpha": ALPHA, "expected_effect": EXPECTED_EFFECT, "margin": MARGIN}
LIST_KEYS = ("metrics", "over", "row_metric", "secondary_metric")
KEYS = (*TEXT_KEYS, *NUMBER_KEYS, *LIST_KEYS, "reference", "gates")
GATE_KEYS = ("converged", "overfits", "preconditions")
EXAMPLE = "e.g. `primary: ensemble=swa`; see python -m ablate.table --help"


def load_plan(path: Path) -> dict[str, Any]:
    """The plan as the table's option values (``args`` attribute names), every value checked."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--plan {path}: no such file; e.g. --plan experiments/<name>/plan.yaml") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"--plan {path} is not a readable YAML file: {reason}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--plan {path} must be a mapping of option: value; {EXAMPLE}")
    _refuse_unknown(f"--plan {path}", data, KEYS)
    out: dict[str, Any] = {}
    for key, value in data.items():
        where = f"--plan {path}: {key}"
        if key in TEXT_KEYS:
            out[key] = _text(where, value)
        elif key in NUMBER_KEYS:
            out[key] = _number(where, value, NUMBER_KEYS[key])
        elif key in ("metrics", "secondary_metric"):
            out[key] = [_text(where, v) for v in _as_list(where, value)]
        elif key == "over":
            out[key] = ",".join(_text(where, v) for v in _as_list(where, value))
        elif key == "row_metric":
            items = value.items() if isinstance(value, dict) else None
            specs = [f"{s}:{m}" for s, m in items] if items is not None else _as_list(where, value)
            out[key] = [_text(where, v) for v in specs]
        elif key == "reference":
            out[key] = Path(_text(where, value))
        else:
            out.update(_gates(f"--plan {path}: gates", value))
    return out


def _refuse_unknown(where: str, mapping: dict, known: tuple[str, ...]) -> None:
    unknown = [str(k) for k in mapping if k not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(unknown)}; known keys: {', '.join(known)}")


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool) or not str(value).strip():
        raise ConfigError(f"{where} must be a text value, got {value!r}; {EXAMPLE}")
    return str(value)


def _as_list(where: str, value: Any) -> list[Any]:
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where} is an empty list; give at least one value or leave the key out")
        return value
    return [value]


def _number(where: str, value: Any, spec: tuple) -> float:
    if isinstance(value, bool):
        value = "true" if value else "false"
    try:
        return number_arg(*spec)(str(value))
    except argparse.ArgumentTypeError as err:
        raise ConfigError(f"{where} {err}") from None


def _gates(where: str, value: Any) -> dict[str, Any]:
    """gates: {converged: true | {tolerance: T[, window: W]}, overfits: {min_gap: G}, preconditions: [text, ...]}"""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(GATE_KEYS)}; got {value!r}")
    _refuse_unknown(where, value, GATE_KEYS)
    out: dict[str, Any] = {}
    if "converged" in value:
        converged = value["converged"]
        if isinstance(converged, dict) and "window" in converged:
            converged = dict(converged)
            window = converged.pop("window")
            if window not in CONVERGED_WINDOWS:
                known = ", ".join(CONVERGED_WINDOWS)
                raise ConfigError(f"{where}.converged.window must be one of {known}, got {window!r}")
            out["converged_window"] = window
            converged = converged or True  # {window: final_lr} alone: the default tolerance
        out["converged"] = _gate_number(f"{where}.converged", converged, "tolerance", TOLERANCE)
    if "overfits" in value:
        out["overfits"] = _gate_number(f"{where}.overfits", value["overfits"], "min_gap", MIN_GAP)
    if "preconditions" in value:
        out["precondition"] = [_text(f"{where}.preconditions", v) for v in _as_list(where, value["preconditions"])]
    return {k: v for k, v in out.items() if v is not None}


def _gate_number(where: str, value: Any, name: str, spec: tuple) -> float | None:
    """``{name: x}``; ``true`` (converged only: the default tolerance) or ``false`` (not checked)."""
    if value is False:
        return None
    if value is True and name == "tolerance":
        return CONVERGED_TOLERANCE
    if not isinstance(value, dict) or set(value) != {name}:
        raise ConfigError(
            f"{where} must be {{{name}: <number>}}, got {value!r}; e.g. {{{name}: {spec[1].split()[-1]}}}"
        )
    return _number(f"{where}.{name}", value[name], spec)


def apply_plan(args: argparse.Namespace, defaults: dict[str, Any]) -> None:
    """Fill every option the command line left unset from ``args.plan`` (if given), then from ``defaults``."""
    plan = load_plan(args.plan) if getattr(args, "plan", None) else {}
    for key, value in plan.items():
        if getattr(args, key, None) in (None, []):
            setattr(args, key, value)
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
