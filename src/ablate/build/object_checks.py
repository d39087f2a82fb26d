"""Checks that need the built objects: the optimizer and scheduler built once on a throwaway copy, and the run's
length (known once the data are loaded) against the ensemble's cycles and a cyclic schedule.

Every rule on values and between keys is the rule book's (``ablate.config.rules``, torch-free, run first); these
are in build because they need torch, the model or the data (they were ``ablate.config.object_checks``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from ablate.errors import ConfigError
from ablate.optim import build_scheduler
from ablate.optim.schedulers import cyclic_end_warning
from ablate.training.ensembles import check_run_length as check_ensemble


def check_optimization(
    cfg: DictConfig,
    model: nn.Module,
    optimizer: Callable[..., torch.optim.Optimizer],
    scheduler: dict[str, Any] | None,
    steps_per_epoch: int,
) -> None:
    """Build the optimizer and scheduler once on a throwaway copy of the parameters: torch's own argument checks
    (and typos in their keys) then fail here, before training, rather than inside the fit loop."""
    params = [nn.Parameter(p.detach().clone()) for p in model.parameters()]
    try:
        opt = optimizer(params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"optimizer: {err}; check the optimizer.* keys") from None
    if scheduler:
        epochs = int(cfg.trainer.get("max_epochs") or 1)
        try:
            build_scheduler(scheduler["fn"], opt, scheduler["interval"], steps_per_epoch * max(epochs, 1), epochs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"scheduler: {err}; check the scheduler.fn.* keys") from None
        except ZeroDivisionError:  # e.g. OneCycleLR whose warm-up phase rounds to zero steps
            raise ConfigError(
                f"scheduler: the run is too short for this schedule ({steps_per_epoch * max(epochs, 1)} "
                f"{scheduler['interval']}s); raise trainer.max_epochs or lower data.batch_size"
            ) from None


def planned_steps(cfg: DictConfig, batches_per_epoch: int, accumulate: int) -> tuple[int, int]:
    """(optimizer steps, epochs) the run will make, as Lightning counts them: trainer.limit_train_batches and
    trainer.max_steps included (ablate.training.configure_optimizers.optimizer_steps gives the same number once the
    trainer exists)."""
    trainer = cfg.trainer
    limit = trainer.get("limit_train_batches")
    if isinstance(limit, float):
        batches_per_epoch = int(batches_per_epoch * limit)
    elif isinstance(limit, int):
        batches_per_epoch = min(batches_per_epoch, limit)
    per_epoch = math.ceil(batches_per_epoch / accumulate)
    epochs, max_steps = int(trainer.get("max_epochs") or 0), int(trainer.get("max_steps") or -1)
    steps = per_epoch * epochs if epochs > 0 else max_steps
    if max_steps > 0:
        steps = min(steps, max_steps)
        epochs = min(epochs, math.ceil(max_steps / max(per_epoch, 1))) if epochs > 0 else epochs
    return max(steps, 0), epochs


def check_run_length(cfg: DictConfig, batches_per_epoch: int, accumulate: int) -> list[str]:
    """Checks that need the run's length, before training: the ensemble's (snapshot cycles that fit, an EMA that
    updates at all; ``ablate.training.ensembles.check_run_length``) and a cyclic LR that ends mid-cycle (a warning).
    Returns warnings, one line each, for results.json's ``warnings``."""
    steps, epochs = planned_steps(cfg, batches_per_epoch, accumulate)
    warnings = check_ensemble(cfg, steps)
    scheduler = cfg.get("scheduler") or {}
    fn = scheduler.get("fn") or {}
    if fn.get("_target_") == "torch.optim.lr_scheduler.CyclicLR":
        unit = scheduler.get("interval", "step")
        total = steps if unit == "step" else epochs
        warning = cyclic_end_warning(total, int(fn.get("step_size_up", 2000)), fn.get("step_size_down"), unit)
        warnings += [warning] if warning else []
    return warnings
