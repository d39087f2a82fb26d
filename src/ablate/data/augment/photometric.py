"""Label-preserving photometric ops and per-sample torchvision policies: brightness / contrast, Gaussian pixel noise,
RandAugment and TrivialAugment (run sample by sample, hence slow: see :class:`PerSample`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.transforms import v2

from ablate.data.augment.base import BatchOp, global_rng_from, uniform


def adjust_brightness_contrast(x: Tensor, brightness: Tensor, contrast: Tensor) -> Tensor:
    """Per-sample ``v2.functional.adjust_brightness`` then ``adjust_contrast`` with (B,) factor tensors.

    Hand-written because torchvision's functionals take one factor for the whole batch. Same formulas:
    brightness scales the image, contrast blends it with the mean of its grayscale version; each clamps.
    """
    b = brightness.to(x.dtype).view(-1, 1, 1, 1)
    c = contrast.to(x.dtype).view(-1, 1, 1, 1)
    x = (x * b).clamp_(0.0, 1.0)
    if x.shape[1] == 3:
        gray = v2.functional.rgb_to_grayscale(x)
    else:
        gray = x
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    return x.mul_(c).add_(mean * (1.0 - c)).clamp_(0.0, 1.0)


class ColorJitter(BatchOp):
    """Per-sample brightness factor in [1 - b, 1 + b] and contrast factor in [1 - c, 1 + c] (fixed order).

    A batched per-sample version of torchvision's ColorJitter for these two knobs (Krizhevsky et al. 2012
    used a related PCA colour jitter); unlike torchvision it always applies brightness before contrast.
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0) -> None:
        super().__init__()
        if not (0.0 <= brightness <= 1.0 and 0.0 <= contrast <= 1.0):
            raise ValueError(f"ColorJitter brightness, contrast must be in [0, 1], got {brightness}, {contrast}")
        self.brightness, self.contrast = brightness, contrast

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b, c = self.brightness, self.contrast
        bf = uniform(len(x), 1.0 - b, 1.0 + b, x, generator)
        cf = uniform(len(x), 1.0 - c, 1.0 + c, x, generator)
        return adjust_brightness_contrast(x, bf, cf)

    def extra_repr(self) -> str:
        return f"brightness={self.brightness}, contrast={self.contrast}"


class GaussianNoise(BatchOp):
    """Add N(0, std^2) noise to every pixel (one ``std`` for the whole batch), then clamp to [0, 1].

    Hand-written rather than ``v2.GaussianNoise`` only to take a generator. On CPU the normal draws dominate
    (about 1 ms for 100k pixels), so this is the costliest of the cheap ops.
    """

    def __init__(self, std: float) -> None:
        super().__init__()
        if not std >= 0.0:
            raise ValueError(f"GaussianNoise std must be >= 0, got {std}")
        self.std = std

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if generator is None:
            noise = torch.randn_like(x)
        else:
            noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
            noise = noise.to(x.device)
        return noise.mul_(self.std).add_(x).clamp_(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"std={self.std}"


class PerSample(BatchOp):
    """Apply a torchvision v2 image transform to each sample (``chunk_size=1``) or to each chunk of samples.

    Given a batch tensor, v2 transforms draw ONE set of parameters for the whole batch; calling them per
    sample restores per-sample randomness at the price of B Python-level calls (about 0.4-0.7 ms each on one
    CPU core for 28x28 images, i.e. 50-90 ms per batch of 128, against ~2 ms for a small model's training
    step). ``chunk_size=k`` cuts that ~k-fold, with the samples of a chunk sharing their ops and magnitudes.
    """

    def __init__(self, transform: Callable[[Tensor], Tensor], chunk_size: int = 1) -> None:
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"PerSample chunk_size must be >= 1, got {chunk_size}")
        self.transform, self.chunk_size = transform, chunk_size

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        with global_rng_from(generator):
            out = torch.cat([self.transform(chunk) for chunk in x.split(self.chunk_size)])
        return out.clamp_(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"chunk_size={self.chunk_size}"


class RandAugment(PerSample):
    """RandAugment (Cubuk et al. 2020): ``num_ops`` ops drawn uniformly from 14, all at one ``magnitude``.

    torchvision's ``v2.RandAugment`` applied per sample (see :class:`PerSample` for the cost).
    """

    def __init__(self, num_ops: int = 2, magnitude: int = 9, chunk_size: int = 1) -> None:
        if num_ops < 1 or not 0 <= magnitude <= 30:
            raise ValueError(f"RandAugment needs num_ops >= 1, magnitude in [0, 30]; got {num_ops}, {magnitude}")
        super().__init__(v2.RandAugment(num_ops=num_ops, magnitude=magnitude), chunk_size)


class TrivialAugment(PerSample):
    """TrivialAugment (Muller & Hutter 2021): one op and one magnitude drawn uniformly per image, no knobs.

    torchvision's ``v2.TrivialAugmentWide`` applied per sample (see :class:`PerSample` for the cost).
    """

    def __init__(self, chunk_size: int = 1) -> None:
        super().__init__(v2.TrivialAugmentWide(), chunk_size)
