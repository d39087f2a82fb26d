"""Batched data augmentation on the batch's device, with independent random parameters for every sample.

The in-memory loader yields whole uint8 batches and has no per-sample transform hook, so augmentation runs
here, on the (B, C, H, W) float batch in [0, 1] (before normalization), inside the training step. Each op
draws its parameters as (B,)-shaped tensors, so two samples in one batch get different flips, crops, angles,
... for the cost of a few tensor ops per batch instead of B Python calls.

Label-preserving ops map ``x -> x``; mixing ops (MixUp, CutMix) map ``(x, targets) -> (x, soft targets)``.
:class:`BatchAugment` chains them and :func:`build_augment` builds one from the flat ``aug`` config group
(:class:`AugmentConfig`). Train with :func:`soft_target_cross_entropy`, which takes either kind of target.

Randomness: every op takes an optional ``torch.Generator``; without one it draws from the global RNG (which
the training loop seeds). Parameters are drawn on the generator's device and moved to the batch's device, so
for GPU batches pass a generator on the GPU (or none) to avoid a host-to-device copy per op. The torchvision
transforms used here only draw from the global CPU RNG; given a generator, they run inside a forked global RNG
seeded from it, so results depend on the generator only and the global RNG state is left untouched.
"""

from ablate.config.rules.typed_nodes import AugmentConfigError
from ablate.config.schema import AugmentConfig
from ablate.data.augment.base import BatchMix, BatchOp
from ablate.data.augment.geometric import RandomAffine, RandomCrop, RandomFlip, affine_grid, rotate_zoom_theta
from ablate.data.augment.mixing import CutMix, MixUp
from ablate.data.augment.photometric import (
    ColorJitter,
    GaussianNoise,
    PerSample,
    RandAugment,
    TrivialAugment,
    adjust_brightness_contrast,
)
from ablate.data.augment.pipeline import BatchAugment, build_augment, hard_labels, soft_target_cross_entropy

__all__ = [
    "AugmentConfig",
    "AugmentConfigError",
    "BatchAugment",
    "BatchMix",
    "BatchOp",
    "ColorJitter",
    "CutMix",
    "GaussianNoise",
    "MixUp",
    "PerSample",
    "RandAugment",
    "RandomAffine",
    "RandomCrop",
    "RandomFlip",
    "TrivialAugment",
    "adjust_brightness_contrast",
    "affine_grid",
    "build_augment",
    "hard_labels",
    "rotate_zoom_theta",
    "soft_target_cross_entropy",
]
