"""The one checking pass over train.py's composed config, before torch is imported (answers in well under 1 s).

:func:`check` resolves the config, coerces numeric strings (``optimizer.lr=${oc.env:LR}`` arrives as ``'0.01'``),
checks every present key against its rule (``train_keys``), the typed reg / aug nodes (``typed_nodes``), the
contradictions between keys (``cross``) and the metric a sweep selects on (``search.optimized_metric``). It returns
a :class:`Checked`: a checked copy of the config, holding the coerced values, and the warnings. The config it was
given is never written: what runs is the copy.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ablate.config.rules import cross, search
from ablate.config.rules.core import check_value
from ablate.config.rules.train_keys import rule_for
from ablate.config.rules.typed_nodes import check_typed
from ablate.errors import ConfigError


@dataclass(frozen=True)
class Checked:
    """The outcome of the checking pass: ``config`` is a checked copy of the input (numeric strings coerced, a whole
    ``data.val_size`` float made a count); ``warnings`` are one line each, for stderr and results.json."""

    config: DictConfig
    warnings: list[str]


def check(cfg: DictConfig) -> Checked:
    """Check the composed config; raise ConfigError for the first problem. ``cfg`` itself is left as it was."""
    coerced, warnings = _check(cfg)
    checked = copy.deepcopy(cfg)
    with open_dict(checked):
        for key, value in coerced.items():
            OmegaConf.update(checked, key, value, merge=False, force_add=True)
    return Checked(checked, warnings)


def validate(cfg: DictConfig) -> list[str]:
    """Check the composed config; raise ConfigError for the first problem, return warnings (one line each).
    Writes nothing: callers that run the config take :func:`check`'s copy, which holds the coerced values."""
    return _check(cfg)[1]


def _check(cfg: DictConfig) -> tuple[dict[str, Any], list[str]]:
    """({dotted key: coerced value} for the values that the rules changed, warnings)."""
    _check_missing(cfg)
    plain = resolve(cfg)
    coerced: dict[str, Any] = {}
    for key, value in _leaves(plain):
        rule = rule_for(key)
        if rule is None:
            continue
        try:
            checked = check_value(key, value, rule)
        except ConfigError:
            _blame_source(cfg, key, value)  # scheduler.fn.cycles=${ensemble.cycles}: name the key the user set
            raise
        if checked != value or type(checked) is not type(value):
            coerced[key] = checked
            _set_plain(plain, key, checked)
    _check_finite(plain)
    for key, value in cross.check_val_size(plain.get("data") or {}).items():
        coerced[key] = value
        _set_plain(plain, key, value)
    cross.check_ckpt_path(plain.get("ckpt_path"))
    cross.check_ensemble_members(plain)
    check_typed(plain)
    warnings = cross.check_modes(plain) + cross.check_combinations(plain)
    search.optimized_metric(plain)
    return coerced, warnings


# -- the pass over a composed config -----------------------------------------------------------------------------
def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf; lists with a rule of their own count as leaves."""
    if isinstance(node, dict):
        items: list[tuple[str, Any]] = []
        for name, child in node.items():
            key = f"{prefix}.{name}" if prefix else str(name)
            if rule_for(key) is not None or not isinstance(child, dict | list):
                items.append((key, child))
            elif isinstance(child, dict):
                items.extend(_leaves(child, key))
        return items
    return []


def resolve(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers; an unresolvable ``${...}`` is a ConfigError naming its key."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "a value"
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raw = _raw(cfg, key)
        hint = "refer to an existing key, e.g. ${optimizer.lr}, or pass a plain value"
        if "oc.env" in raw:
            hint = "set the variable or give a default, e.g. ${oc.env:LR,0.01}"
        raise ConfigError(f"{key}={raw} cannot be resolved ({message}); {hint}") from None


def _raw(cfg: DictConfig, key: str) -> str:
    """The unresolved text of ``key`` (e.g. '${foo}'), or '' when the key cannot be followed."""
    node: Any = OmegaConf.to_container(cfg, resolve=False)
    for part in re.findall(r"[^.\[\]]+", key):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return ""
    return str(node)


def _missing_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value is ``???`` (OmegaConf's "missing"), found without resolving anything (resolving an
    interpolation to a missing value raises, and ``OmegaConf.missing_keys`` resolves)."""
    if isinstance(node, dict | list):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        keys = [_missing_keys(child, f"{prefix}.{name}" if prefix else str(name)) for name, child in items]
        return [key for found in keys for key in found]
    return [prefix] if node == "???" else []


def _check_missing(cfg: DictConfig) -> None:
    """A mandatory value left unset (``data=imagefolder`` without ``data.root``) is one line, not OmegaConf's
    MissingMandatoryValue traceback at instantiation."""
    missing = _missing_keys(OmegaConf.to_container(cfg, resolve=False))
    if missing:
        key = missing[0]
        rule = rule_for(key)
        example = f"; e.g. {key}={rule.example}" if rule is not None else ""
        raise ConfigError(f"{key} must be set: it has no default{example}")


def _check_finite(plain: dict[str, Any]) -> None:
    """inf and nan are refused for every number of the config, also where no rule covers the key (the typed
    reg/aug/init knobs, sweeper-free extras): no knob of ablate gives them a meaning, and ``reg.l2=1e400`` would
    otherwise train and 'diverge'. Keys with a rule were checked (finite included) by ``check_value``."""
    for key, value in _numbers(plain):
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}")


def _numbers(node: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every float in ``node``; list items are ``key[i]``."""
    if isinstance(node, dict):
        pairs = [_numbers(child, f"{prefix}.{name}" if prefix else str(name)) for name, child in node.items()]
        return [pair for found in pairs for pair in found]
    if isinstance(node, list):
        return [pair for i, child in enumerate(node) for pair in _numbers(child, f"{prefix}[{i}]")]
    return [(prefix, node)] if isinstance(node, float) else []


def _blame_source(cfg: DictConfig, key: str, value: Any) -> None:
    """When ``key`` only copies another key (``${other}`` or ``${oc.select:other,...}``), check the value against the
    other key's rule first, so that the error names the key the user set."""
    match = re.fullmatch(r"\$\{(?:oc\.select:)?([\w.]+)(?:,[^}]*)?\}", _raw(cfg, key).strip())
    source = match.group(1) if match else None
    if source and source != key and (rule := rule_for(source)) is not None:
        check_value(source, value, rule)


def _set_plain(plain: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        plain = plain[part]
    plain[last] = value
