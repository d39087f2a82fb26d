"""The LightningModule around the network: for training (its own optimizer step, augmentation, per-step
regularizers) and for evaluate.py (a checkpoint's network, scored only). Both are made here, so the module's
constructor is called from one file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig

from ablate.build.optimizer_plan import Optimization
from ablate.config.schema import RegConfig
from ablate.optim import is_lbfgs
from ablate.training.module import ClassifierModule
from ablate.training.module_config import Evaluation, Network, Objective, Stepping
from ablate.training.regularization import StepRegularizers


def training_module(
    cfg: DictConfig,
    model: torch.nn.Module,
    datamodule: Any,
    reg: RegConfig,
    seed: int,
    optimization: Optimization,
    augment: Callable[..., Any] | None,
    run_config: dict[str, Any],
) -> ClassifierModule:
    """The module that trains ``model``; ``run_config`` goes into every checkpoint as ``ablate_config``."""
    optimizer = optimization.optimizer
    # torch's LBFGS flattens gradients with .view(-1), which NHWC (channels_last) conv weights do not allow.
    channels_last = bool(cfg.channels_last) and len(datamodule.input_shape) == 3 and not is_lbfgs(optimizer)
    stepping = Stepping(
        optimizer=optimizer,
        scheduler=optimization.scheduler,
        decay_bias_and_norm=bool(cfg.decay_bias_and_norm),
        backbone_lr_scale=optimization.backbone_lr_scale,
        nan_check_every=int(cfg.nan_check_every),
        **optimization.stepping,  # gradient_clip_val, gradient_clip_algorithm, accumulate_grad_batches
    )
    objective = Objective(
        seed=seed, label_smoothing=reg.label_smoothing, augment=augment, regularizers=StepRegularizers(reg, model)
    )
    return ClassifierModule(
        Network(model, datamodule.mean, datamodule.std, channels_last),
        stepping,
        objective,
        Evaluation(repeats=eval_repeats(reg)),
        run_config=run_config,
    )


def evaluation_module(
    cfg: DictConfig, model: torch.nn.Module, datamodule: Any, reg: RegConfig, mean: torch.Tensor, std: torch.Tensor
) -> ClassifierModule:
    """A checkpoint's network for scoring only (never ``configure_optimizers``), normalizing with its own stats."""
    channels_last = bool(cfg.get("channels_last", False)) and len(datamodule.input_shape) == 3
    return ClassifierModule(Network(model, mean, std, channels_last), evaluation=Evaluation(repeats=eval_repeats(reg)))


def eval_repeats(reg: RegConfig) -> int:
    """Stochastic passes averaged per evaluation batch: FMP's test-time average, else one."""
    return reg.fmp_test_repeats if reg.fmp else 1
