"""The rules of a search (``hydra.sweeper.*`` of hparams_search=..., and its space), checked by the Optuna sweeper
before its first trial, before anything is composed or written. Errors are one-line ConfigErrors; the sweeper prints
them as ``error: <message>`` and exits 2."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ablate.config import metric_registry
from ablate.config.rules.core import Rule, check_value, choice, integer
from ablate.errors import ConfigError

SEARCH_RULES: dict[str, Rule] = {
    "hydra.sweeper.sampler": choice("random", "tpe", "grid"),
    # null: the grid's size (grid sampler); other samplers need a count
    "hydra.sweeper.n_trials": integer(20, low=1, nullable=True),
    "hydra.sweeper.n_jobs": integer(1, low=1),
    "hydra.sweeper.seed": integer(0, nullable=True),
    "hydra.sweeper.direction": choice("auto", "minimize", "maximize"),
    "hydra.sweeper.pruner": choice("median", nullable=True),
    "hydra.sweeper.repeats": integer(2, low=1, why="seeds per setting"),
}


def validate_search(params: dict[str, Any]) -> dict[str, Any]:
    """The sweeper's settings checked against SEARCH_RULES (coerced: ``n_trials='5'`` -> 5); a ConfigError names the
    key. ``repeats`` is set as ``search.repeats`` and named so in the error."""
    checked = dict(params)
    for key, rule in SEARCH_RULES.items():
        name = key.rsplit(".", 1)[1]
        if name not in params:
            continue
        try:
            checked[name] = check_value(key, params[name], rule)
        except ConfigError as err:
            if name != "repeats":
                raise
            raise ConfigError(str(err).replace("hydra.sweeper.repeats", "search.repeats")) from None
    return checked


def check_range(name: str, text: str, values: list[Any]) -> None:
    """``range(start, stop, step)`` must hold at least one value."""
    if not values:
        raise ConfigError(
            f"{name}={text} holds no value (start must be below stop for a positive step); e.g. {name}=range(1, 5)"
        )


def check_interval(name: str, low: float, high: float, log_scale: bool, grid: bool) -> None:
    """Optuna's own checks raise bare ValueErrors mid-sweep; these name the key and the fix."""
    if grid:
        raise ConfigError(
            f"the grid sampler needs discrete values for {name} (got interval); "
            f"use choice(...) or range(...), or hparams_search=random / tpe"
        )
    if low > high:
        raise ConfigError(f"{name}: interval({low:g}, {high:g}) needs low <= high; e.g. interval({high:g}, {low:g})")
    if log_scale and low <= 0:
        raise ConfigError(
            f"{name}: a log range needs low > 0, got interval({low:g}, {high:g}); "
            f"e.g. tag(log, interval({high / 1000 if high > 0 else 1e-4:g}, {high if high > 0 else 1e-1:g}))"
        )


def check_settings(p: dict[str, Any], space: dict[str, Any]) -> None:
    """Rules between the search's settings: a non-empty space, a trial count (the grid's size by default) and a
    validation objective."""
    if not space:
        raise ConfigError("the search space is empty; set hydra.sweeper.params or use hparams_search=...")
    if p.get("n_trials") is None and p.get("sampler", "tpe") != "grid":
        raise ConfigError("hydra.sweeper.n_trials is not set; give the number of trials to run")
    metric = str(p.get("metric", "val/acc_best"))
    if metric.startswith("test/"):
        raise ConfigError(f"optimized_metric={metric} is a test metric; search on a validation metric (val/...)")


def check_pruner(p: dict[str, Any], jobs_per_trial: int) -> None:
    """The median pruner watches one validation curve, so a trial must be one job."""
    if p.get("pruner") and jobs_per_trial > 1:
        raise ConfigError(
            "hydra.sweeper.pruner needs one job per trial (one validation curve); "
            "set search.repeats=1 and data.num_folds=0, or hydra.sweeper.pruner=null"
        )


def check_objective(metric: str, per_epoch: list[str], end: list[str], pruned: bool) -> None:
    """Refuse, before the first trial, an objective that no job of this search writes (every trial would fail).
    ``per_epoch`` / ``end``: the validation metrics the recipe writes after every epoch / once after training."""
    if not per_epoch:
        raise ConfigError(
            f"optimized_metric={metric} needs a validation split, and this recipe has none; "
            "set data.val_size > 0 (e.g. data.val_size=0.1) or data.num_folds >= 2"
        )
    if metric not in per_epoch + end:
        raise ConfigError(
            f"optimized_metric={metric} is not written by this recipe; it writes {', '.join(per_epoch + end)}"
        )
    if pruned and metric not in per_epoch:
        raise ConfigError(
            f"hydra.sweeper.pruner watches the objective after every epoch, but {metric} is computed once "
            f"after training; optimize a per-epoch metric ({', '.join(per_epoch)}) or set hydra.sweeper.pruner=null"
        )


def optimized_metric(cfg: Mapping[str, Any]) -> str:
    """train.py's ``optimized_metric`` (what a sweep selects on; default val/acc_best), refused unless it is a
    validation metric the registry knows (an unknown name has no direction). Checked for every run by
    :func:`ablate.config.rules.check`; a sweep job reads the name back through here."""
    metric = str(cfg.get("optimized_metric") or "val/acc_best")
    if not metric.startswith("val/"):
        raise ConfigError(
            f"optimized_metric={metric} is not a validation metric; sweeps select on val/... "
            "(e.g. val/acc_best, val/acc, val/loss), never on test data"
        )
    try:
        metric_registry.parse(metric)
    except ConfigError as err:
        raise ConfigError(f"optimized_metric={metric}: {err}; e.g. optimized_metric=val/acc_best") from None
    return metric
