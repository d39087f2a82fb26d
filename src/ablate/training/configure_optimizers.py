"""The module's optimizer and LR schedule, and the run's length in optimizer steps.

Split from ``ClassifierModule`` (which steps both itself, manual optimization) so the module reads as the loss and
its statistics. ``optimizer_steps`` is also what the snapshot collector and the schedules count in.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L

from ablate.optim import build_scheduler, is_lbfgs, param_groups, scale_group_lrs


def optimizer_steps(trainer: L.Trainer, accumulate_grad_batches: int) -> int:
    """Optimizer steps in the whole run (accumulation is ours, so the trainer counts batches, not steps)."""
    batches = int(trainer.estimated_stepping_batches)  # also sets up the train loader
    if accumulate_grad_batches == 1:
        return batches
    per_epoch = math.ceil(trainer.num_training_batches / accumulate_grad_batches)
    steps = per_epoch * int(trainer.max_epochs or 1)
    return min(steps, trainer.max_steps) if trainer.max_steps > 0 else steps


def configure(module: Any) -> Any:
    """``configure_optimizers`` of a ClassifierModule: its optimizer over the model's parameter groups, and the
    schedule, returned so Lightning checkpoints it and LearningRateMonitor sees it (the module steps it)."""
    # LBFGS takes a single parameter group (and has no weight decay to exempt anything from).
    single_group = module.decay_bias_and_norm or is_lbfgs(module.optimizer_factory)
    optimizer = module.optimizer_factory(param_groups(module.model, single_group, module.backbone_lr_scale))
    scale_group_lrs(optimizer)
    if not module.scheduler_config:
        return optimizer
    cfg = module.scheduler_config
    steps = optimizer_steps(module.trainer, module.accumulate_grad_batches)
    epochs = int(module.trainer.max_epochs or 1)
    scheduler = build_scheduler(cfg["fn"], optimizer, cfg["interval"], steps=steps, epochs=epochs)
    return {"optimizer": optimizer, "lr_scheduler": scheduler}
