"""Typed config nodes for the multi-select groups (reg, aug) and init: every knob defaults to "off".

They are registered in Hydra's ConfigStore as ``schema/reg``, ``schema/aug`` and ``schema/init`` and loaded at
``reg``/``aug``/``init`` before the selected option files, so option files only name the knobs they turn on,
several options merge (``'reg=[dropout,l2]'``), and a misspelled knob is an error, never a silent no-op.
This module imports no torch, so ``train.py --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf


@dataclass
class RegConfig:
    """Regularizers. 0 / false / null means off; the option files in configs/reg/ turn them on."""

    l2: float = 0.0  # lambda of (lambda / 2) * sum(w^2), added to the loss (coupled, unlike AdamW's decay)
    l1: float = 0.0  # lambda of lambda * sum(|w|)
    penalty_params: str = "weights"  # weights (conv/linear weights) | all (biases and norm parameters too)
    dropout: float = 0.0  # hidden fully connected layers (mlp, convnet)
    input_dropout: float = 0.0  # the input units (mlp), as in Srivastava et al. 2014
    spatial_dropout: float = 0.0  # whole channels after conv blocks (convnet)
    dropconnect: float = 0.0  # drop probability of each weight (Wan et al. 2013)
    dropconnect_layers: str = "linear"  # linear | linear+conv (the output layer is never masked)
    dropconnect_per_sample: bool = False  # an independent weight mask per sample instead of per batch
    dropconnect_inference: str = "mean"  # mean (mean-field) | sample (Gaussian moment matching)
    fmp: bool = False  # fractional max pooling instead of downsampling (convnet) / in fmpnet
    fmp_ratio: float = 1.4142135623730951
    fmp_mode: str = "random"  # random | pseudorandom
    fmp_overlapping: bool = True
    fmp_test_repeats: int = 1  # average the predictions of R forward passes at evaluation
    stochastic_depth: float = 1.0  # survival probability p_L of the last residual block (1.0 = off; resnet)
    stochastic_depth_mode: str = "row"  # row: drop per sample | batch: per mini-batch, as Huang et al. 2016
    batchnorm: bool | None = None  # null: the model's default; true/false forces it on/off
    input_noise: float = 0.0  # std of Gaussian noise on input pixels in [0, 1] (training only)
    weight_noise: float = 0.0  # std of Gaussian noise on the weights for each training forward pass
    gradient_noise: float = 0.0  # eta of annealed gradient noise, variance eta / (1 + t)^0.55
    label_smoothing: float = 0.0
    max_norm: float = 0.0  # cap on the L2 norm of each hidden unit's incoming weights, after every step
    max_norm_output: bool = False  # also cap the output layer's (Srivastava et al. 2014 constrain hidden units only)
    activation_l1: float = 0.0  # lambda of the mean |activation| of hidden units (sparse representations)
    adversarial_eps: float = 0.0  # FGSM step in pixel units ([0, 1] images)
    adversarial_weight: float = 0.5  # loss = (1 - w) * clean + w * adversarial (Goodfellow et al. 2015)
    early_stopping_patience: int = 0  # stop when val/loss has not improved for N epochs (0 = off)


@dataclass
class AugmentConfig:
    """Batched augmentation of training batches. See ablate.data.augment for each op.

    flip: probability of a horizontal flip. crop_padding: pixels of zero padding before a random crop back to
    size (0: off). scale: [min, max] random zoom (null: off). rotate: max rotation in degrees. brightness /
    contrast: jitter factors drawn from [1 - v, 1 + v]. noise_std: Gaussian pixel noise. mixup_alpha /
    cutmix_alpha: Beta(alpha, alpha) parameter (0: off; both on: one per batch, 50/50). randaugment /
    trivialaugment: per-sample torchvision policies (slow, see PerSample; at most one of them).
    """

    flip: float = 0.0
    crop_padding: int = 0
    scale: list[float] | None = None
    rotate: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    noise_std: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    randaugment: bool = False
    randaugment_num_ops: int = 2
    randaugment_magnitude: int = 9
    trivialaugment: bool = False


@dataclass
class InitConfig:
    """Weight initialization of conv/linear weights (biases are set to zero unless scheme is default)."""

    scheme: str = "default"  # default | xavier_uniform | xavier_normal | he_uniform | he_normal | orthogonal


def typed(node: Any, schema: type) -> Any:
    """The plain dataclass behind a typed node: ``schema``'s defaults, overridden by ``node`` (None = all defaults)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node or {}))


def off_value(schema: type, knob: str) -> Any:
    """The value that turns ``knob`` off: its default in ``schema`` (every knob of reg / aug / init is off by default).
    The one definition of "off": the rule book, the builders and the L-BFGS warning all ask here."""
    for field in fields(schema):
        if field.name == knob:
            return None if field.default is MISSING else field.default
    raise KeyError(f"{schema.__name__} has no knob {knob}")


def is_on(node: Any, knob: str, schema: type) -> bool:
    """Whether ``knob`` of ``node`` (a dataclass, a mapping, or None = all defaults) differs from its off value."""
    value = node.get(knob, off_value(schema, knob)) if isinstance(node, Mapping) else getattr(node, knob)
    return bool(value != off_value(schema, knob))


def turned_on(node: Any, schema: type) -> list[str]:
    """The knobs of ``node`` that are not off, in the node's order (a mapping) or the schema's (a dataclass)."""
    names = {field.name for field in fields(schema)}
    keys = list(node) if isinstance(node, Mapping) else [field.name for field in fields(schema)]
    return [key for key in keys if key in names and is_on(node, key, schema)]


def register_configs() -> None:
    store = ConfigStore.instance()
    store.store(group="schema", name="reg", node=RegConfig)
    store.store(group="schema", name="aug", node=AugmentConfig)
    store.store(group="schema", name="init", node=InitConfig)
