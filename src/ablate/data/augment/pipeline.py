"""The pipeline: :class:`BatchAugment` chains the ops, :func:`build_augment` builds one from the flat ``aug`` config
(checked by the rule book, ``ablate.config.rules.typed_nodes.check_aug``), and the loss helpers take either target."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ablate.config.rules.typed_nodes import check_aug
from ablate.config.schema import AugmentConfig, is_on
from ablate.data.augment.base import BatchMix, coin
from ablate.data.augment.geometric import RandomAffine, RandomCrop, RandomFlip
from ablate.data.augment.mixing import CutMix, MixUp
from ablate.data.augment.photometric import ColorJitter, GaussianNoise, RandAugment, TrivialAugment

# ------------------------------------------------------------------------------------ pipeline


class BatchAugment(nn.Module):
    """Label-preserving ops in the given order, then at most one mixing op; ``(x, y) -> (x, targets)``.

    ``targets`` is ``y`` unchanged when there is no mixing op, else soft float32 targets (B, num_classes).
    With two mixing ops (MixUp and CutMix), each batch uses one of them, chosen with probability 0.5 (timm's
    ``switch_prob`` default). Runs under ``torch.no_grad``: augmentation is not part of the model.
    """

    def __init__(self, ops: Sequence[nn.Module], num_classes: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.ops = nn.ModuleList([op for op in ops if not isinstance(op, BatchMix)])
        self.mixes = nn.ModuleList([op for op in ops if isinstance(op, BatchMix)])
        if len(self.mixes) > 2:
            raise ValueError(f"BatchAugment takes at most two mixing ops, got {len(self.mixes)}")
        if self.mixes and num_classes < 1:
            raise ValueError(f"BatchAugment num_classes must be >= 1 with mixing ops, got {num_classes}")
        self.num_classes, self.generator = num_classes, generator

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if not x.is_floating_point():
            raise TypeError(f"BatchAugment expects a float batch in [0, 1], got {x.dtype} (use x.float() / 255)")
        gen = self.generator
        with torch.no_grad():
            for op in self.ops:
                x = op(x, gen)
            if not self.mixes:
                return x, y
            mix = self.mixes[0]
            if len(self.mixes) == 2 and coin(gen):
                mix = self.mixes[1]
            if y.ndim == 2:
                targets = y.float()
            else:  # one-hot by scatter: unlike F.one_hot it does not read the labels back from the GPU
                targets = torch.zeros(len(y), self.num_classes, device=y.device).scatter_(1, y[:, None], 1.0)
            return mix(x, targets, gen)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


def build_augment(
    cfg: Mapping[str, Any],
    num_classes: int,
    image_size: tuple[int, int],
    generator: torch.Generator | None = None,
) -> BatchAugment | None:
    """Build the training-batch augmentation from a flat ``aug`` mapping (see :class:`AugmentConfig`).

    Missing keys take the defaults (off). Returns None when every knob is off, so callers can skip the call.
    Order: flip, crop, zoom/rotate, RandAugment/TrivialAugment, colour, noise, then mixup/cutmix (the order of
    torchvision's reference recipes: geometry, then the policy, then mixing on the batch).
    Raises :class:`AugmentConfigError` (a ValueError) naming the bad key.
    """
    c = check_aug(cfg, image_size)

    def on(knob: str) -> bool:  # "off" is the schema's default (ablate.config.schema.off_value), nowhere else
        return is_on(c, knob, AugmentConfig)

    ops: list[nn.Module] = []
    if on("flip"):
        ops.append(RandomFlip(c.flip))
    if on("crop_padding"):
        ops.append(RandomCrop(c.crop_padding, "zeros"))
    scale = None if c.scale is None or c.scale == [1.0, 1.0] else (c.scale[0], c.scale[1])
    if scale is not None or on("rotate"):
        ops.append(RandomAffine(scale, c.rotate))
    if on("randaugment"):
        ops.append(RandAugment(c.randaugment_num_ops, c.randaugment_magnitude))
    if on("trivialaugment"):
        ops.append(TrivialAugment())
    if on("brightness") or on("contrast"):
        ops.append(ColorJitter(c.brightness, c.contrast))
    if on("noise_std"):
        ops.append(GaussianNoise(c.noise_std))
    if on("mixup_alpha"):
        ops.append(MixUp(c.mixup_alpha, num_classes))
    if on("cutmix_alpha"):
        ops.append(CutMix(c.cutmix_alpha, num_classes))
    return BatchAugment(ops, num_classes, generator) if ops else None


# ------------------------------------------------------------------------------------ loss helpers


def soft_target_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy for int labels (B,) or soft targets (B, K) such as mixup/cutmix output.

    Both go through ``F.cross_entropy``, which accepts class probabilities and applies label smoothing
    (Szegedy et al. 2016) to them as ``targets * (1 - eps) + eps / K``.
    """
    if targets.ndim == 2:
        targets = targets.to(logits.dtype)
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


def hard_labels(targets: Tensor) -> Tensor:
    """Int labels for accuracy: soft targets -> argmax (the larger mixing partner); int labels unchanged.

    For mixed batches accuracy against the argmax is a rough training signal only; evaluate on clean data.
    """
    return targets.argmax(dim=-1) if targets.ndim == 2 else targets
