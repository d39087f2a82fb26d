"""What a ``ClassifierModule`` is made of, in four typed, frozen groups that follow its own jobs.

- ``Network``: the model and the input it expects (normalization, memory format): every module has one.
- ``Stepping``: how its manual optimizer step runs: optimizer, schedule, clipping, accumulation, divergence check.
- ``Objective``: what the training step adds to the plain loss: label smoothing, augmentation, per-step
  regularizers, and the seed their random draws restart from each epoch.
- ``Evaluation``: how validation and test batches are scored.

The defaults are the "off" values, so a module that only scores a checkpoint (evaluate.py) names a ``Network`` and
an ``Evaluation`` and nothing else. None of these objects reaches a checkpoint: the module copies their values into
plain attributes, buffers and submodules (the same ones as before the groups existed), and ``on_save_checkpoint``
writes only the resolved run config, so checkpoints keep loading with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ablate.training.regularization import StepRegularizers

Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True, eq=False)
class Network:
    """The classifier and its input: uint8 images become ``(x / 255 - mean) / std`` per channel, NHWC when
    ``channels_last``. ``mean`` and ``std`` end up as module buffers, so a checkpoint normalizes by itself."""

    model: nn.Module
    mean: torch.Tensor
    std: torch.Tensor
    channels_last: bool = False


@dataclass(frozen=True, eq=False)
class Stepping:
    """The module's own optimizer step (manual optimization). ``optimizer`` is None only for a module that never
    trains (``configure_optimizers`` is not called on it)."""

    optimizer: Callable[..., torch.optim.Optimizer] | None = None  # a partial; the module passes the param groups
    scheduler: Mapping[str, Any] | None = None  # {fn, interval, monitor}
    decay_bias_and_norm: bool = False  # True: one parameter group, weight decay on everything
    backbone_lr_scale: float = 1.0  # transfer learning: the backbone's groups get lr * scale
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    accumulate_grad_batches: int = 1
    nan_check_every: int = 25  # steps between finiteness checks of the running train loss (each is a device sync)


@dataclass(frozen=True, eq=False)
class Objective:
    """What a training step minimises beyond plain cross-entropy on clean inputs."""

    seed: int = 0  # each epoch reseeds torch from (seed, epoch, rank): augmentation, dropout and noise replay
    label_smoothing: float = 0.0
    augment: Augment | None = None  # training batches only, on the device, before normalization
    regularizers: StepRegularizers | None = None


@dataclass(frozen=True, eq=False)
class Evaluation:
    """How validation and test batches are scored."""

    repeats: int = 1  # stochastic passes averaged per batch (FMP's test-time average), else one
