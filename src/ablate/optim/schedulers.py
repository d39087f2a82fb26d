"""Learning-rate schedules built from torch.optim.lr_scheduler.

Config contract: a scheduler node holds ``fn`` (a ``_partial_`` factory that takes the optimizer), ``interval``
(``step`` or ``epoch``) and optionally ``monitor``. A factory whose signature has ``total_steps`` receives the
run length in ``interval`` units (``trainer.estimated_stepping_batches`` or ``max_epochs``), so length-dependent
schedules never hard-code it. The factories below only translate run length into torch's own arguments.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    SequentialLR,
)

from ablate.errors import ConfigError


def cosine(optimizer: Optimizer, total_steps: int, eta_min: float = 0.0) -> LRScheduler:
    """Cosine annealing from the base LR to ``eta_min`` over the whole run (Loshchilov & Hutter 2017)."""
    return CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=eta_min)


def multistep_fraction(
    optimizer: Optimizer, total_steps: int, fractions: Sequence[float] = (0.5, 0.75), gamma: float = 0.1
) -> LRScheduler:
    """MultiStepLR with its milestones given as fractions of the run: the classic "divide by 10 at 50% and 75%" of
    He et al. 2016 / Huang et al. 2016-2017 at any run length."""
    values = [float(f) for f in fractions]
    if any(not 0.0 < f < 1.0 for f in values) or values != sorted(values):
        raise ConfigError(f"scheduler.fn.fractions must be increasing fractions in (0, 1), got {list(fractions)}")
    return MultiStepLR(optimizer, milestones=[round(f * total_steps) for f in values], gamma=gamma)


def snapshot(optimizer: Optimizer, total_steps: int, cycles: int = 5) -> LRScheduler:
    """Snapshot-ensemble schedule (Huang et al. 2017): cosine restarted ``cycles`` times, stepped per iteration.

    alpha(t) = alpha0 / 2 * (cos(pi * mod(t - 1, ceil(T / M)) / ceil(T / M)) + 1), which is exactly
    CosineAnnealingWarmRestarts with T_0 = ceil(T / M) and eta_min = 0.
    """
    if cycles < 1:
        raise ConfigError(f"scheduler.fn.cycles must be >= 1, got {cycles}")
    return CosineAnnealingWarmRestarts(optimizer, T_0=max(math.ceil(total_steps / cycles), 1), eta_min=0.0)


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05, start_factor: float = 0.01
) -> LRScheduler:
    """Linear warm-up over the first ``warmup_fraction`` of the run, then cosine annealing to zero."""
    if not 0.0 <= warmup_fraction < 1.0:
        raise ConfigError(f"scheduler.fn.warmup_fraction must be in [0, 1), got {warmup_fraction}")
    warmup = max(round(warmup_fraction * total_steps), 1)
    return SequentialLR(
        optimizer,
        [
            LinearLR(optimizer, start_factor=start_factor, total_iters=warmup),
            CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup, 1)),
        ],
        milestones=[warmup],
    )


def swa_start_index(swa_start: float | int, total: int) -> int:
    """SWA's first averaged epoch (0-based): a fraction in (0, 1) of ``total``, or an index (int >= 0)."""
    if isinstance(swa_start, bool) or not isinstance(swa_start, (int, float)):
        raise ConfigError(f"ensemble.swa_start must be a fraction in (0, 1) or an epoch index, got {swa_start!r}")
    if isinstance(swa_start, float):
        if not 0.0 < swa_start < 1.0:
            raise ConfigError(f"ensemble.swa_start as a fraction must be in (0, 1), got {swa_start}")
        return int(swa_start * total)
    if not 0 <= swa_start < total:
        raise ConfigError(f"ensemble.swa_start={swa_start} must be an epoch index in [0, {total}); or a fraction")
    return swa_start


def swa(
    optimizer: Optimizer, total_steps: int, swa_start: float | int = 0.75, swa_lr: float | None = None
) -> LRScheduler:
    """The SWA schedule of Izmailov et al. 2018 (their code's ``schedule``), in ``interval`` units (epochs for
    ``ensemble=swa``): the base LR for the first half of the pre-SWA phase, a linear decay to ``swa_lr`` until 90% of
    it, then ``swa_lr`` constant through the averaging phase. ``swa_lr=None``: half of each group's base LR.
    """
    start = max(swa_start_index(swa_start, total_steps), 1)
    if swa_lr is not None and not swa_lr > 0:
        raise ConfigError(f"ensemble.swa_lr must be > 0 (or null for half the base LR), got {swa_lr}")

    def factor(ratio: float) -> Callable[[int], float]:
        def schedule(t: int) -> float:
            x = t / start
            if x <= 0.5:
                return 1.0
            if x <= 0.9:
                return 1.0 - (1.0 - ratio) * (x - 0.5) / 0.4
            return ratio

        return schedule

    ratios = [swa_lr / group["lr"] if swa_lr is not None else 0.5 for group in optimizer.param_groups]
    return LambdaLR(optimizer, [factor(r) for r in ratios])


def build_scheduler(
    fn: Callable[..., Any], optimizer: Optimizer, interval: str, steps: int, epochs: int
) -> LRScheduler | Any:
    if interval not in ("step", "epoch"):
        raise ConfigError(f"scheduler.interval must be 'step' or 'epoch', got '{interval}'")
    kwargs: dict[str, Any] = {}
    if "total_steps" in inspect.signature(fn).parameters:
        kwargs["total_steps"] = steps if interval == "step" else epochs
    scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]
    if any(scale != 1.0 for scale in scales):
        # Schedules given in absolute LRs (OneCycleLR's max_lr, CyclicLR's base_lr/max_lr) get one value per group,
        # scaled like the group (optimizer.backbone_lr_scale); relative schedules keep the ratio by themselves.
        for key, value in getattr(fn, "keywords", {}).items():
            if key in ("max_lr", "base_lr") and isinstance(value, int | float):
                kwargs[key] = [value * scale for scale in scales]
    return fn(optimizer, **kwargs)
