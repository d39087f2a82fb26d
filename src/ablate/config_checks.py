"""Checks that run before any training: impossible values fail fast with the key, the value and the fix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from ablate.errors import ConfigError
from ablate.optim import build_scheduler

SCHEDULER_MONITORS = ("val/loss", "val/acc", "train/loss", "train/acc")


def check_config(cfg: DictConfig) -> None:
    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer (0 is fine), got {seed!r}")
    if cfg.get("test_weights", "best") not in ("best", "last"):
        raise ConfigError(f"test_weights must be 'best' or 'last', got {cfg.test_weights!r}")
    if int(cfg.get("nan_check_every", 1)) < 1:
        raise ConfigError(f"nan_check_every must be >= 1, got {cfg.nan_check_every}")
    trainer = cfg.trainer
    max_epochs = trainer.get("max_epochs")
    if max_epochs is not None and max_epochs < 1 and max_epochs != -1:
        raise ConfigError(f"trainer.max_epochs must be >= 1, got {max_epochs}")
    lr = cfg.optimizer.get("lr")
    if lr is not None and not lr > 0:
        raise ConfigError(f"optimizer.lr must be > 0, got {lr}")
    for key in ("weight_decay", "momentum"):
        value = cfg.optimizer.get(key)
        if value is not None and value < 0:
            raise ConfigError(f"optimizer.{key} must be >= 0, got {value}")
    if cfg.get("scheduler") and cfg.scheduler.get("interval") not in ("step", "epoch"):
        raise ConfigError(f"scheduler.interval must be 'step' or 'epoch', got {cfg.scheduler.get('interval')!r}")
    monitor = cfg.scheduler.get("monitor") if cfg.get("scheduler") else None
    if monitor is not None and monitor not in SCHEDULER_MONITORS:
        raise ConfigError(f"scheduler.monitor must be one of {', '.join(SCHEDULER_MONITORS)}, got {monitor!r}")
    if cfg.get("ckpt_path"):
        from pathlib import Path

        if not Path(cfg.ckpt_path).is_file():
            raise ConfigError(f"ckpt_path {cfg.ckpt_path} does not exist; pass a run's checkpoints/last.ckpt")


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


def optimizer_stepping(cfg: DictConfig, optimizer: Callable[..., torch.optim.Optimizer]) -> dict[str, Any]:
    """The module's clipping and accumulation settings, read from the Lightning names under ``trainer``."""
    trainer = cfg.trainer
    clip = trainer.get("gradient_clip_val")
    algorithm = trainer.get("gradient_clip_algorithm") or "norm"
    accumulate = trainer.get("accumulate_grad_batches", 1)
    if clip is not None and not clip >= 0:
        raise ConfigError(f"trainer.gradient_clip_val must be >= 0 (null = off), got {clip}")
    if algorithm not in ("norm", "value"):
        raise ConfigError(f"trainer.gradient_clip_algorithm must be 'norm' or 'value', got {algorithm!r}")
    if not isinstance(accumulate, int) or isinstance(accumulate, bool) or accumulate < 1:
        raise ConfigError(f"trainer.accumulate_grad_batches must be an integer >= 1, got {accumulate!r}")
    if accumulate > 1 and getattr(optimizer, "func", None) is torch.optim.LBFGS:
        raise ConfigError(
            "optimizer=lbfgs re-evaluates its closure; use a larger data.batch_size instead of "
            "trainer.accumulate_grad_batches"
        )
    return {
        "gradient_clip_val": clip or None,
        "gradient_clip_algorithm": algorithm,
        "accumulate_grad_batches": accumulate,
    }
