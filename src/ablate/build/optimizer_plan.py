"""How the run steps: the optimizer factory, the schedule, transfer learning's LR scale and staged unfreezing, and the
module's clipping and accumulation, checked against the run's length before anything trains."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from ablate.build.finetune import finetune_callbacks, pop_backbone_lr_scale
from ablate.build.object_checks import check_optimization, check_run_length
from ablate.build.objects import build_object
from ablate.config import metric_registry


@dataclass(frozen=True)
class Optimization:
    optimizer: Callable[..., torch.optim.Optimizer]  # a partial; the module passes the parameter groups
    scheduler: dict[str, Any] | None  # {fn, interval, monitor}
    backbone_lr_scale: float
    stepping: dict[str, Any]  # gradient_clip_val, gradient_clip_algorithm, accumulate_grad_batches (the module's)
    finetuning: tuple[L.Callback, ...]  # model=transfer's staged unfreezing
    warnings: tuple[str, ...]  # run-length warnings (ensemble cycles, a cyclic LR cut mid-cycle)


def scheduler_fn(node: DictConfig) -> Any:
    """The schedule's factory; a plateau schedule's ``mode: null`` becomes its monitor's direction (metric registry)."""
    fn = build_object(node.fn, "scheduler.fn")
    if "mode" in node.fn and node.fn.mode is None and node.get("monitor"):
        fn = functools.partial(fn, mode=metric_registry.mode(node.monitor))
    return fn


def _stepping(trainer: DictConfig) -> dict[str, Any]:
    """The module's clipping and accumulation (it steps the optimizer itself), read from Lightning's names under
    ``trainer``; their values and L-BFGS's refusal of accumulation are the rule book's."""
    return {
        "gradient_clip_val": trainer.get("gradient_clip_val") or None,
        "gradient_clip_algorithm": trainer.get("gradient_clip_algorithm") or "norm",
        "accumulate_grad_batches": trainer.get("accumulate_grad_batches", 1),
    }


def build_optimization(cfg: DictConfig, model: torch.nn.Module, batches_per_epoch: int) -> Optimization:
    """Everything the module's optimizer step needs; refused here (ConfigError) rather than inside the fit loop."""
    scheduler = None
    if cfg.get("scheduler"):
        scheduler = {
            "fn": scheduler_fn(cfg.scheduler),
            "interval": cfg.scheduler.get("interval", "epoch"),
            "monitor": cfg.scheduler.get("monitor"),
        }
    optimizer_node, backbone_lr_scale = pop_backbone_lr_scale(cfg.optimizer)
    optimizer = build_object(optimizer_node, "optimizer")
    finetuning = finetune_callbacks(model, backbone_lr_scale, scheduler)  # model=transfer's staged unfreezing
    stepping = _stepping(cfg.trainer)
    accumulate = stepping["accumulate_grad_batches"]
    # Ensemble cycles / EMA updates that fit the run, a cyclic LR cut mid-cycle: refused or warned before training.
    warnings = check_run_length(cfg, batches_per_epoch, accumulate)
    check_optimization(cfg, model, optimizer, scheduler, steps_per_epoch=math.ceil(batches_per_epoch / accumulate))
    return Optimization(optimizer, scheduler, backbone_lr_scale, stepping, tuple(finetuning), tuple(warnings))
