"""Label-mixing ops (MixUp, CutMix): ``(x, targets) -> (x, soft targets)``, built on torchvision's v2 transforms."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms import v2

from ablate.data.augment.base import BatchMix, global_rng_from

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
        with global_rng_from(generator):
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
