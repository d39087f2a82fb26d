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

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms import v2

from ablate.config.schema import AugmentConfig
from ablate.errors import ConfigError

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


# ------------------------------------------------------------------------------------ random helpers


def _rand(shape: int | tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """float32 draws from U[0, 1) on ``like``'s device (made on the generator's device if one is given)."""
    if generator is None:
        return torch.rand(shape, device=like.device)
    return torch.rand(shape, generator=generator, device=generator.device).to(like.device)


def _uniform(n: int, low: float, high: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return _rand(n, like, generator).mul_(high - low).add_(low)


def _randint(high: int, n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """``n`` int64 draws from {0, ..., high - 1} on ``like``'s device."""
    if generator is None:
        return torch.randint(high, (n,), device=like.device)
    return torch.randint(high, (n,), generator=generator, device=generator.device).to(like.device)


def _coin(generator: torch.Generator | None) -> bool:
    """A fair coin flip, drawn on the CPU unless the generator lives elsewhere (no GPU sync by default)."""
    device = "cpu" if generator is None else generator.device
    return bool(torch.rand((), generator=generator, device=device) < 0.5)


@contextmanager
def _global_rng_from(generator: torch.Generator | None) -> Iterator[None]:
    """Run torchvision transforms (which only use the global CPU RNG) deterministically from ``generator``.

    Without a generator this does nothing (the transforms use the global RNG, as every other op does).
    """
    if generator is None:
        yield
        return
    seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[]):  # CPU state only: CUDA RNGs are neither read nor touched
        torch.default_generator.manual_seed(seed)
        yield


# ------------------------------------------------------------------------------------ base classes


class BatchOp(nn.Module):
    """A label-preserving augmentation: ``forward(x, generator=None) -> x`` on a (B, C, H, W) batch in [0, 1].

    Outputs are new tensors (the input is never modified), with the input's shape, dtype and device.
    """

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError


class BatchMix(nn.Module):
    """A label-mixing augmentation: ``forward(x, targets, generator=None) -> (x, soft targets (B, K))``."""

    def forward(self, x: Tensor, targets: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


# ------------------------------------------------------------------------------------ label-preserving ops


class RandomFlip(BatchOp):
    """Mirror each sample left-right with probability ``p``, independently per sample.

    Horizontal flips are the standard augmentation for natural images (Krizhevsky et al. 2012; He et al.
    2016); they are wrong for data where handedness carries the label (digits, text).
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomFlip p must be a probability in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        flip = _rand((len(x), 1, 1, 1), x, generator).lt_(self.p).to(x.dtype)  # 1.0: mirror, 0.0: keep
        # lerp with weights in {0, 1} selects x or its mirror exactly (torch evaluates it as a + w * (b - a)
        # for w < 0.5 and b - (b - a) * (1 - w) otherwise). It is ~2x faster on CPU than torch.where with a
        # broadcast mask, and unlike boolean indexing it never waits for the GPU.
        return torch.lerp(x, x.flip(-1), flip)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@lru_cache(maxsize=16)
def _crop_offsets(B: int, sample_stride: int, row_stride: int, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Flat start of each sample, and flat offset of each of the n x n window positions (row-major).

    Cached because on CPU every small tensor op costs ~5-10 us, a sizeable part of a ~0.2 ms crop.
    """
    sample_starts = torch.arange(B, device=device) * sample_stride
    positions = torch.arange(n * n, device=device)
    return sample_starts, positions.div(n, rounding_mode="floor") * row_stride + positions % n


class RandomCrop(BatchOp):
    """Pad every side by ``padding`` pixels, then crop a random H x W window per sample (He et al. 2016).

    ``padding_mode`` is ``"zeros"`` (the classic CIFAR recipe) or ``"reflect"`` (no artificial black border).
    torchvision's RandomCrop draws one window per call; this draws one per sample, vectorized (see forward).
    """

    _MODES = {"zeros": "constant", "reflect": "reflect"}

    def __init__(self, padding: int = 4, padding_mode: str = "zeros") -> None:
        super().__init__()
        if padding < 0:
            raise ValueError(f"RandomCrop padding must be >= 0, got {padding}")
        if padding_mode not in self._MODES:
            raise ValueError(f"RandomCrop padding_mode must be zeros or reflect, got {padding_mode!r}")
        self.padding, self.padding_mode = padding, padding_mode

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        p = self.padding
        if p == 0:
            return x.clone()
        B, C, H, W = x.shape
        if self.padding_mode == "reflect" and p >= min(H, W):
            raise ValueError(f"reflect padding {p} must be smaller than the image size {H}x{W}")
        # contiguous: the strides below assume the standard (B, C, H, W) layout, e.g. for channels_last input
        padded = F.pad(x, (p, p, p, p), mode=self._MODES[self.padding_mode]).contiguous()
        Hp, Wp = H + 2 * p, W + 2 * p
        # Hand-written (torchvision has no per-sample crop): view the padded batch as "the C x H x W window
        # whose top-left corner is at flat offset k", for every k, via as_strided (no copy); then one
        # index_select copies the B chosen windows. Each chosen window lies inside its own sample.
        sample_starts, window_offsets = _crop_offsets(B, C * Hp * Wp, Wp, 2 * p + 1, x.device)
        choice = _randint(len(window_offsets), B, x, generator)  # (top, left) = divmod(choice, 2p + 1)
        starts = sample_starts + window_offsets[choice]
        n_starts = padded.numel() - ((C - 1) * Hp * Wp + (H - 1) * Wp + (W - 1))
        windows = padded.view(-1).as_strided((n_starts, C, H, W), (1, Hp * Wp, Wp, 1))
        return windows.index_select(0, starts)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, padding_mode={self.padding_mode!r}"


@lru_cache(maxsize=16)
def _grid_basis(H: int, W: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(6, H*W*2) matrix E such that ``(theta.view(B, 6) @ E).view(B, H, W, 2) == F.affine_grid(theta, ...)``.

    Row 3k + j of E holds pixel-centre coordinate j (x, y or 1; align_corners=False) in output slot k. One
    GEMM with a long inner dimension replaces affine_grid's batched (H*W x 3) @ (3 x 2) products, which are
    ~10x slower on CPU for small images, and writes the interleaved (x, y) layout directly.
    """
    xs = (torch.arange(W, dtype=torch.float64) * 2 + 1) / W - 1
    ys = (torch.arange(H, dtype=torch.float64) * 2 + 1) / H - 1
    base = torch.stack([xs.expand(H, W), ys[:, None].expand(H, W), torch.ones(H, W, dtype=torch.float64)])
    basis = torch.zeros(2, 3, H * W, 2, dtype=torch.float64)
    for k in range(2):
        basis[k, :, :, k] = base.reshape(3, H * W)
    return basis.reshape(6, H * W * 2).to(device=device, dtype=dtype)


def affine_grid(theta: Tensor, size: tuple[int, int, int, int]) -> Tensor:
    """``F.affine_grid(theta, size, align_corners=False)`` (2D) as one GEMM; see ``_grid_basis``."""
    B, _, H, W = size
    basis = _grid_basis(H, W, theta.device, theta.dtype)
    return (theta.reshape(B, 6) @ basis).view(B, H, W, 2)


def rotate_zoom_theta(angle: Tensor, zoom: Tensor, H: int, W: int) -> Tensor:
    """(B, 2, 3) ``affine_grid`` matrices rotating by ``angle`` (radians) and magnifying by ``zoom`` (B,).

    theta maps output to input coordinates normalized to [-1, 1] per axis; the H/W factors undo that
    normalization around the rotation, so it rotates pixels: theta = D^-1 R D / zoom with D = diag(W, H).
    """
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zero = torch.zeros_like(cos)
    return torch.stack([cos, -sin * (H / W), zero, sin * (W / H), cos, zero], 1).view(-1, 2, 3)


class RandomAffine(BatchOp):
    """Per-sample random zoom in ``scale = (min, max)`` and rotation in [-degrees, degrees], one resampling.

    Zoom s > 1 magnifies the content (the centre 1/s of the image fills the frame); s < 1 shrinks it and fills
    the border with zeros (``padding_mode="zeros"``) or the nearest edge pixel (``"border"``). Both are drawn
    uniformly. Rotation is about the image centre in pixel space, so non-square images are not sheared.
    Bilinear ``grid_sample`` with per-sample ``theta`` matrices (Jaderberg et al. 2015).
    """

    def __init__(
        self, scale: tuple[float, float] | None = None, degrees: float = 0.0, padding_mode: str = "zeros"
    ) -> None:
        super().__init__()
        lo, hi = (1.0, 1.0) if scale is None else (float(scale[0]), float(scale[1]))
        if not 0.0 < lo <= hi:
            raise ValueError(f"RandomAffine scale must be (min, max) with 0 < min <= max, got {scale}")
        if not 0.0 <= degrees <= 180.0:
            raise ValueError(f"RandomAffine degrees must be in [0, 180], got {degrees}")
        if padding_mode not in ("zeros", "border", "reflection"):
            raise ValueError(f"RandomAffine padding_mode must be zeros/border/reflection, got {padding_mode!r}")
        self.scale, self.degrees, self.padding_mode = (lo, hi), float(degrees), padding_mode

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        B, C, H, W = x.shape
        angle = _uniform(B, -math.radians(self.degrees), math.radians(self.degrees), x, generator)
        zoom = _uniform(B, self.scale[0], self.scale[1], x, generator)
        grid = affine_grid(rotate_zoom_theta(angle, zoom, H, W).to(x.dtype), (B, C, H, W))
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)
        return out.clamp_(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, degrees={self.degrees}, padding_mode={self.padding_mode!r}"


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
        bf = _uniform(len(x), 1.0 - b, 1.0 + b, x, generator)
        cf = _uniform(len(x), 1.0 - c, 1.0 + c, x, generator)
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
        with _global_rng_from(generator):
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


# ------------------------------------------------------------------------------------ label-mixing ops


class _TorchvisionMix(BatchMix):
    """Wraps torchvision's batch ``v2.MixUp`` / ``v2.CutMix``, adding generator support and a final clamp.

    torchvision draws ONE lambda (and, for CutMix, one box) per batch, as in both papers, and pairs sample i
    with sample i - 1 (``roll(1)``): a random pairing only because training batches are shuffled (a batch
    sorted by class would mostly mix a class with itself). Targets are
    ``lam * onehot(y) + (1 - lam) * onehot(y.roll(1))``; for CutMix lam is recomputed from the clipped box as
    ``1 - box_area / (H * W)``, so label weights equal the true pixel fractions.
    """

    transform_cls: type[v2.Transform]

    def __init__(self, alpha: float, num_classes: int | None) -> None:
        if not alpha > 0.0:
            raise ValueError(f"{type(self).__name__} alpha must be > 0, got {alpha}")
        super().__init__()
        self.alpha = alpha
        self.transform = self.transform_cls(alpha=alpha, num_classes=num_classes)

    def forward(self, x: Tensor, targets: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        with _global_rng_from(generator):
            x, targets = self.transform(x, targets)
        return x.clamp_(0.0, 1.0), targets

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class MixUp(_TorchvisionMix):
    """mixup (Zhang et al. 2018): convex blend of image pairs and their labels, lam ~ Beta(alpha, alpha).

    ``targets`` may be int labels (then ``num_classes`` is required) or soft (B, K) targets.
    """

    transform_cls = v2.MixUp

    def __init__(self, alpha: float = 0.2, num_classes: int | None = None) -> None:
        super().__init__(alpha, num_classes)


class CutMix(_TorchvisionMix):
    """CutMix (Yun et al. 2019): paste a random box from the paired image; labels weighted by box area.

    The box has area ~(1 - lam) of the image with lam ~ Beta(alpha, alpha), is clipped at the image border,
    and the label weight is the clipped area. ``targets`` as for :class:`MixUp`.
    """

    transform_cls = v2.CutMix

    def __init__(self, alpha: float = 1.0, num_classes: int | None = None) -> None:
        super().__init__(alpha, num_classes)


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
            if len(self.mixes) == 2 and _coin(gen):
                mix = self.mixes[1]
            if y.ndim == 2:
                targets = y.float()
            else:  # one-hot by scatter: unlike F.one_hot it does not read the labels back from the GPU
                targets = torch.zeros(len(y), self.num_classes, device=y.device).scatter_(1, y[:, None], 1.0)
            return mix(x, targets, gen)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


class AugmentConfigError(ConfigError, ValueError):
    """A bad ``aug.*`` value: a ValueError for library callers, a ConfigError for the entry points."""


def _number(name: str, value: Any, low: float, high: float, what: str, integer: bool = False) -> None:
    """Raise unless ``value`` is a finite number (an int if ``integer``) in [low, high]."""
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and low <= value <= high):
        raise AugmentConfigError(f"aug.{name} must be {what}, got {value!r}")


def _validated(cfg: Mapping[str, Any], image_size: tuple[int, int]) -> AugmentConfig:
    known = [f.name for f in fields(AugmentConfig)]
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise AugmentConfigError(f"unknown aug option(s) {unknown}; known options: {known}")
    c = AugmentConfig(**{k: cfg[k] for k in cfg})
    max_pad = min(image_size) - 1
    _number("flip", c.flip, 0, 1, "a probability in [0, 1]")
    _number("crop_padding", c.crop_padding, 0, max_pad, f"an integer in [0, {max_pad}]", integer=True)
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
    c = _validated(cfg, image_size)
    ops: list[nn.Module] = []
    if c.flip > 0:
        ops.append(RandomFlip(c.flip))
    if c.crop_padding > 0:
        ops.append(RandomCrop(c.crop_padding, "zeros"))
    scale = None if c.scale is None or c.scale == [1.0, 1.0] else (c.scale[0], c.scale[1])
    if scale is not None or c.rotate > 0:
        ops.append(RandomAffine(scale, c.rotate))
    if c.randaugment:
        ops.append(RandAugment(c.randaugment_num_ops, c.randaugment_magnitude))
    if c.trivialaugment:
        ops.append(TrivialAugment())
    if c.brightness > 0 or c.contrast > 0:
        ops.append(ColorJitter(c.brightness, c.contrast))
    if c.noise_std > 0:
        ops.append(GaussianNoise(c.noise_std))
    if c.mixup_alpha > 0:
        ops.append(MixUp(c.mixup_alpha, num_classes))
    if c.cutmix_alpha > 0:
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
