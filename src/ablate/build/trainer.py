"""What the Trainer is made of: the config's callbacks, early stopping, the loggers and the trainer arguments.

The Trainer itself is made by whoever runs it (``Recipe.trainer``): the training job adds its own run plumbing
(history.csv, signal handling, checksummed checkpoint files), a benchmark its timers.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelSummary, ProgressBar
from omegaconf import DictConfig, OmegaConf

from ablate.build.objects import build_object
from ablate.config import metric_registry


def config_callbacks(cfg: DictConfig, has_val: bool, quiet: bool = False) -> list[L.Callback]:
    """``cfg.callbacks`` in order, then early stopping (reg.early_stopping). Without a validation split, checkpoints
    are named by epoch and monitor nothing. ``quiet``: no progress bar or model summary."""
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if name == "model_checkpoint" and not has_val:
            node = OmegaConf.merge(node, {"monitor": None, "filename": "epoch{epoch:03d}"})
        callbacks.append(build_object(node, f"callbacks.{name}"))
    patience = cfg.reg.early_stopping_patience
    if patience:  # without a validation split: refused by the rule book (cross.py)
        callbacks.append(EarlyStopping(monitor="val/loss", mode=metric_registry.mode("val/loss"), patience=patience))
    # Lightning refuses a progress bar or model summary callback with those switched off (trainer_args).
    return [c for c in callbacks if not (quiet and isinstance(c, ProgressBar | ModelSummary))]


def build_loggers(cfg: DictConfig) -> list[Any]:
    return [build_object(node, f"logger.{name}") for name, node in (cfg.get("logger") or {}).items()]


def trainer_args(cfg: DictConfig, quiet: bool = False) -> dict[str, Any]:
    """``cfg.trainer`` resolved, with what the module does itself switched off in Lightning."""
    args = OmegaConf.to_container(cfg.trainer, resolve=True)
    # The module steps the optimizer itself (manual optimization), so clipping and accumulation are its job.
    args.update(gradient_clip_val=None, gradient_clip_algorithm=None, accumulate_grad_batches=1)
    if quiet:  # a multirun job says one line when it ends
        args.update(enable_progress_bar=False, enable_model_summary=False)
    return args
