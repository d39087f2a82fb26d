"""The search space: Hydra's sweep syntax (``tag(log, interval(1e-4, 1e-1))``, ``choice(a, b)``, ``range(1, 5)``)
-> Optuna distributions (or grid values), the objective's direction, and the metrics a recipe's jobs write.
The rules on them (empty ranges, bad intervals, objectives no job writes) are the rule book's
(``ablate.config.rules.search``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from ablate.config import metric_registry
from ablate.config.rules.cross import has_validation
from ablate.config.rules.search import check_interval, check_range
from ablate.errors import ConfigError


class SearchError(HydraException):
    """A search that cannot start; Hydra prints the message without a traceback."""


def _distribution(name: str, override: Override, grid: bool) -> Any:
    """Hydra sweep syntax -> an Optuna distribution (or, for the grid sampler, the list of grid values)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if isinstance(value, ChoiceSweep):
        choices = list(override.sweep_iterator())
        return list(choices) if grid else CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        check_range(name, override.input_line.split("=", 1)[1], values)
        if grid:
            return values
        if all(isinstance(v, int) for v in values):
            return IntDistribution(int(value.start), int(values[-1]), step=int(value.step))
        return FloatDistribution(float(value.start), float(values[-1]), step=float(value.step))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        check_interval(name, float(value.start), float(value.end), log_scale, grid)
        if isinstance(value.start, int) and isinstance(value.end, int) and not log_scale:
            return IntDistribution(value.start, value.end)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise SearchError(f"error: {name}={override.input_line} is not a search range; use choice(), range() or interval()")


def _parse_space(params: dict[str, Any], arguments: Sequence[str], grid: bool) -> tuple[dict[str, Any], list[str]]:
    """The search space (config params, then command-line sweeps) and the fixed command-line overrides."""
    parser = OverridesParser.create()
    space_lines = {key: f"{key}={value}" for key, value in params.items()}
    fixed: list[str] = []
    for override in parser.parse_overrides(list(arguments)):
        key = override.get_key_element()
        if override.is_sweep_override():
            space_lines[key] = override.input_line
        else:
            space_lines.pop(key, None)  # a value given on the command line is fixed, not searched
            fixed.append(override.input_line)
    space = {}
    for key, line in space_lines.items():
        override = parser.parse_override(line)
        if not override.is_sweep_override():  # a plain value in params: a fixed setting of the search
            fixed.append(line)
            continue
        space[key] = _distribution(key, override, grid)
    return space, fixed


def _format(value: Any) -> str:
    """A parameter value as an override: floats in full (repr round-trips), so the job runs the trial's value."""
    return repr(value) if isinstance(value, float) else str(value)


def _short(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _direction(metric: str, direction: str) -> str:
    """Optuna's direction for ``metric``: the metric registry's (auto), or an explicit minimize / maximize (the
    spelling is a rule of the rule book, ``SEARCH_RULES``)."""
    try:
        known = metric_registry.direction(metric)  # an unknown metric is an error even with an explicit direction
    except ConfigError as err:
        raise SearchError(f"error: optimized_metric: {err}") from None
    return known if direction == "auto" else direction


def _select(config: DictConfig, key: str) -> Any:
    try:  # only the keys needed here: the rest may refer to ${hydra:...}, which the sweeper cannot always resolve
        return OmegaConf.select(config, key, default=None)
    except Exception:
        return None


def recipe_metrics(config: DictConfig, space: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(per-epoch, end-of-run) validation metrics that the search's jobs write; [] without a validation split."""
    data = {k: _select(config, f"data.{k}") for k in ("val_size", "num_folds")}
    if not has_validation(data, {"limit_val_batches": _select(config, "trainer.limit_val_batches")}):
        return [], []
    name, cycles = str(_select(config, "ensemble.name") or "none"), _select(config, "ensemble.cycles")
    searched = space.get("ensemble")  # ensemble=choice(ema, swa): any of them may run
    names = [name]
    if searched is not None:
        names = [str(c) for c in (searched if isinstance(searched, list) else getattr(searched, "choices", ()))]
    per_epoch: list[str] = []
    end: list[str] = []
    for each in names:
        a, b = metric_registry.recipe_val_metrics(each, cycles if each == name else None)
        per_epoch += [m for m in a if m not in per_epoch]
        end += [m for m in b if m not in end]
    return per_epoch, end


def sample_job(fixed: list[str], space: dict[str, Any]) -> list[str]:
    """One job's overrides, each parameter at one of its values (to compose once before anything is written)."""
    sample = {}
    for key, dist in space.items():
        values = dist if isinstance(dist, list) else getattr(dist, "choices", None)
        sample[key] = values[0] if values else dist.low
    return [*fixed, *(f"{k}={_format(v)}" for k, v in sample.items())]
