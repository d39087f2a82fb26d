"""The value rules of the typed ``reg`` and ``aug`` nodes (``ablate.config.schema``).

OmegaConf checks their types and refuses unknown knobs at composition; the ranges and choices are here. ``validate``
runs :func:`check_typed` on every train config; :func:`check_aug` is also the one check of
``ablate.data.augment.build_augment`` (a library caller passes a plain mapping, and the crop's bound needs the image
size, known only once the data are loaded). Messages are one line naming the key, as elsewhere in the rule book.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ablate.config.schema import AugmentConfig, RegConfig, is_on, off_value, typed
from ablate.errors import ConfigError, require_probability

REG_CHOICES = {
    "penalty_params": ("weights", "all"),
    "dropconnect_layers": ("linear", "linear+conv"),
    "dropconnect_inference": ("mean", "sample"),
    "fmp_mode": ("random", "pseudorandom"),
    "stochastic_depth_mode": ("row", "batch"),
}


class AugmentConfigError(ConfigError, ValueError):
    """A bad ``aug.*`` value: a ValueError for library callers, a ConfigError for the entry points."""


def check_reg(reg: RegConfig) -> None:
    """Ranges and choices of the ``reg`` knobs."""
    for knob in ("dropout", "input_dropout", "spatial_dropout", "dropconnect", "label_smoothing"):
        require_probability(f"reg.{knob}", getattr(reg, knob))
    for knob in ("l1", "l2", "input_noise", "weight_noise", "gradient_noise", "max_norm", "activation_l1"):
        if getattr(reg, knob) < 0:
            raise ConfigError(f"reg.{knob} must be >= 0, got {getattr(reg, knob)}")
    if not 0.0 <= reg.adversarial_eps <= 1.0 or not 0.0 <= reg.adversarial_weight <= 1.0:
        raise ConfigError("reg.adversarial_eps and reg.adversarial_weight must be in [0, 1]")
    for knob, allowed in REG_CHOICES.items():
        if getattr(reg, knob) not in allowed:
            raise ConfigError(f"reg.{knob} must be one of {list(allowed)}, got {getattr(reg, knob)!r}")
    if reg.fmp and not 1.0 < reg.fmp_ratio < 2.0:
        raise ConfigError(f"reg.fmp_ratio must be in (1, 2), got {reg.fmp_ratio}")
    if reg.fmp_test_repeats < 1 or reg.early_stopping_patience < 0:
        raise ConfigError("reg.fmp_test_repeats must be >= 1 and reg.early_stopping_patience >= 0")


def _number(name: str, value: Any, low: float, high: float, what: str, integer: bool = False) -> None:
    """Raise unless ``value`` is a finite number (an int if ``integer``) in [low, high]."""
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and low <= value <= high):
        raise AugmentConfigError(f"aug.{name} must be {what}, got {value!r}")


def check_aug(cfg: Mapping[str, Any], image_size: tuple[int, int] | None = None) -> AugmentConfig:
    """The checked :class:`AugmentConfig` of a flat ``aug`` mapping (missing keys: off). ``image_size`` bounds the
    crop's padding; without it (the config pass, before the data are loaded) only ``>= 0`` is checked."""
    known = [f.name for f in fields(AugmentConfig)]
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise AugmentConfigError(f"unknown aug option(s) {unknown}; known options: {known}")
    c = AugmentConfig(**{k: cfg[k] for k in cfg})
    max_pad = math.inf if image_size is None else min(image_size) - 1
    _number("flip", c.flip, 0, 1, "a probability in [0, 1]")
    pad_range = "an integer >= 0" if image_size is None else f"an integer in [0, {max_pad}]"
    _number("crop_padding", c.crop_padding, 0, max_pad, pad_range, integer=True)
    if c.scale is not None:
        scale = list(c.scale)
        numbers = all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scale)
        if not (len(scale) == 2 and numbers and 0 < scale[0] <= scale[1] < math.inf):
            raise AugmentConfigError(f"aug.scale must be null or [min, max], 0 < min <= max; got {scale!r}")
        c.scale = [float(s) for s in scale]
    _number("rotate", c.rotate, 0, 180, "an angle in degrees in [0, 180]")
    _number("brightness", c.brightness, 0, 1, "in [0, 1] (factors are drawn from [1 - b, 1 + b])")
    _number("contrast", c.contrast, 0, 1, "in [0, 1] (factors are drawn from [1 - c, 1 + c])")
    _number("noise_std", c.noise_std, 0, math.inf, "a number >= 0")
    _number("mixup_alpha", c.mixup_alpha, 0, math.inf, "a number >= 0 (0: off)")
    _number("cutmix_alpha", c.cutmix_alpha, 0, math.inf, "a number >= 0 (0: off)")
    for name in ("randaugment", "trivialaugment"):
        if not isinstance(getattr(c, name), bool):
            raise AugmentConfigError(f"aug.{name} must be true or false, got {getattr(c, name)!r}")
    _number("randaugment_num_ops", c.randaugment_num_ops, 1, math.inf, "an integer >= 1", integer=True)
    _number("randaugment_magnitude", c.randaugment_magnitude, 0, 30, "an integer in [0, 30]", integer=True)
    if c.randaugment and c.trivialaugment:
        raise AugmentConfigError("aug.randaugment and aug.trivialaugment are both on; choose one")
    return c


# reg knobs with a twin of the same name among the model's own keys (model.dropout, ...); batchnorm has no "off"
# value (null = the model's default), so a model.batchnorm beside reg.batchnorm is not a contradiction
MODEL_TWINS = ("dropout", "input_dropout", "spatial_dropout", "stochastic_depth", "stochastic_depth_mode")


def check_model_twins(reg: RegConfig, model: Mapping[str, Any]) -> None:
    """A rate set to two different values in ``model.*`` and ``reg.*``: one would silently win."""
    for knob in MODEL_TWINS:
        value, off = getattr(reg, knob), off_value(RegConfig, knob)
        in_model = model.get(knob)
        if value != off and in_model not in (None, off, value):
            raise ConfigError(
                f"model.{knob}={in_model} and reg.{knob}={value} set the same thing; keep one "
                f"(e.g. model.{knob}={off} to let reg={knob} decide)"
            )


def check_typed(plain: dict[str, Any]) -> None:
    """The reg and aug nodes of a resolved train config, and the rules between them and with the model's keys."""
    reg = typed(plain.get("reg"), RegConfig)
    check_reg(reg)
    check_model_twins(reg, plain.get("model") or {})
    aug = plain.get("aug") or {}
    check_aug(aug)
    if is_on(reg, "input_noise", RegConfig) and is_on(aug, "noise_std", AugmentConfig):
        raise ConfigError("reg.input_noise and aug.noise_std are the same technique; set only one")
