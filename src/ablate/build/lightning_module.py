"""The LightningModule around the network: for training (its own optimizer step, augmentation, per-step
regularizers) and for evaluate.py (a checkpoint's network, scored only). Both are made here, so the module's
constructor is called from one file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig

from ablate.build.optimizer_plan import Optimization
from ablate.config.object_checks import is_lbfgs
from ablate.config.schema import RegConfig
from ablate.training.module import ClassifierModule
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
    return ClassifierModule(
        model=model,
        optimizer=optimizer,
        scheduler=optimization.scheduler,
        mean=datamodule.mean,
        std=datamodule.std,
        seed=seed,
        decay_bias_and_norm=bool(cfg.decay_bias_and_norm),
        backbone_lr_scale=optimization.backbone_lr_scale,
        label_smoothing=reg.label_smoothing,
        # torch's LBFGS flattens gradients with .view(-1), which NHWC (channels_last) conv weights do not allow.
        channels_last=bool(cfg.channels_last) and len(datamodule.input_shape) == 3 and not is_lbfgs(optimizer),
        nan_check_every=int(cfg.nan_check_every),
        run_config=run_config,
        augment=augment,
        regularizers=StepRegularizers(reg, model),
        eval_repeats=eval_repeats(reg),
        **optimization.stepping,
    )


def evaluation_module(
    cfg: DictConfig, model: torch.nn.Module, datamodule: Any, reg: RegConfig, mean: torch.Tensor, std: torch.Tensor
) -> ClassifierModule:
    """A checkpoint's network for scoring only (never ``configure_optimizers``), normalizing with its own stats."""
    return ClassifierModule(
        model=model,
        optimizer=None,  # type: ignore[arg-type]
        scheduler=None,
        mean=mean,
        std=std,
        channels_last=bool(cfg.get("channels_last", False)) and len(datamodule.input_shape) == 3,
        eval_repeats=eval_repeats(reg),
    )


def eval_repeats(reg: RegConfig) -> int:
    """Stochastic passes averaged per evaluation batch: FMP's test-time average, else one."""
    return reg.fmp_test_repeats if reg.fmp else 1
