"""Learning-rate schedules built from torch.optim.lr_scheduler.

Config contract: a scheduler node holds ``fn`` (a ``_partial_`` factory that takes the optimizer), ``interval``
(``step`` or ``epoch``) and optionally ``monitor``. A factory whose signature has ``total_steps`` receives the
run length in ``interval`` units (``trainer.estimated_stepping_batches`` or ``max_epochs``), so length-dependent
schedules never hard-code it. The factories below only translate run length into torch's own arguments.
"""

from __future__ import annotations

import bisect
import inspect
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
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


def cycle_lengths(total_steps: int, cycles: int, key: str = "scheduler.fn.cycles") -> list[int]:
    """Lengths of the M cycles of a T-step run: T // M each, the remainder spread one step apiece over the first
    cycles (T = 126, M = 5 -> 26, 25, 25, 25, 25), so that every cycle, the last one included, runs its whole cosine
    and ends annealed. When M divides T this is the paper's ceil(T / M); its ceil form otherwise cuts the last cycle
    short (26, 26, 26, 26, 22: the final snapshot at lr 1.7e-4 of 3e-3).

    Every cycle needs a step: a run shorter than M steps is refused with the nearest valid lengths. (A 1-step cycle
    trains at alpha0 only, so its snapshot is not annealed: ``ablate.training.ensembles.check_run_length`` warns.)
    """
    if cycles < 1:
        raise ConfigError(f"{key} must be an integer >= 1, got {cycles}")
    if total_steps < cycles:
        fewer = f"{key}<={total_steps}" if total_steps >= 1 else "a longer run"
        raise ConfigError(
            f"{key}={cycles} needs >= 1 optimizer step per cycle, but the run has {total_steps}; use {fewer}, or "
            f"raise trainer.max_epochs to fit {2 * cycles}+ steps (or lower trainer.accumulate_grad_batches / "
            "data.batch_size)"
        )
    base, extra = divmod(total_steps, cycles)
    return [base + 1 if k < extra else base for k in range(cycles)]


def cycle_ends(total_steps: int, cycles: int, key: str = "scheduler.fn.cycles") -> list[int]:
    """The 1-based iterations that end a cycle (the cumulative cycle lengths): where snapshots are taken."""
    return list(itertools.accumulate(cycle_lengths(total_steps, cycles, key)))


def snapshot(optimizer: Optimizer, total_steps: int, cycles: int = 5) -> LRScheduler:
    """Snapshot-ensemble schedule (Huang et al. 2017): cosine restarted ``cycles`` times, stepped per iteration.

    Within cycle k of length L_k (``cycle_lengths``): alpha = alpha0 / 2 * (cos(pi * i / L_k) + 1), i = 0..L_k - 1,
    which is the paper's alpha(t) = alpha0 / 2 * (cos(pi * mod(t - 1, ceil(T / M)) / ceil(T / M)) + 1) whenever M
    divides T (bit for bit: the same expression as torch's CosineAnnealingWarmRestarts with T_0 = T / M). torch's
    restarts take one fixed period, so cycles of unequal length need this LambdaLR (hand-written for that reason).
    """
    lengths = cycle_lengths(total_steps, cycles)
    starts = [end - length for end, length in zip(itertools.accumulate(lengths), lengths, strict=True)]

    def factor(step: int) -> float:  # step: 0-based iteration (t - 1)
        k = bisect.bisect_right(starts, step) - 1
        i = min(step - starts[k], lengths[k])  # past the run's end: stay at the last cycle's minimum
        return (1 + math.cos(math.pi * i / lengths[k])) / 2

    return LambdaLR(optimizer, factor)


def cyclic_end_warning(total: int, step_size_up: int, step_size_down: int | None, unit: str = "step") -> str | None:
    """scheduler=cyclic (torch's CyclicLR) has a fixed cycle length, so a run can end anywhere in a cycle: say so,
    with step sizes that fit whole cycles into the run (None when the run is a whole number of cycles)."""
    period = step_size_up + (step_size_down or step_size_up)
    if total % period == 0:
        return None
    # The whole-cycle count nearest to the configured period whose cycles have a whole number of steps.
    cycles = min((n for n in range(1, max(total // 2, 1) + 1) if total % n == 0), key=lambda n: abs(n - total / period))
    fit = total // cycles
    up, down = fit // 2 or 1, fit - (fit // 2 or 1)
    hint = f"scheduler.fn.step_size_up={up}" + (f" +scheduler.fn.step_size_down={down}" if down != up else "")
    return (
        f"scheduler=cyclic stops mid-cycle: the run has {total} {unit}s = {total / period:.3g} cycles of {period} "
        f"(scheduler.fn.step_size_up={step_size_up}), so its last LR lies between base_lr and max_lr; for "
        f"{cycles} whole cycle{'s' if cycles > 1 else ''} set {hint}"
    )


def has_momentum(optimizer: Optimizer) -> bool:
    """Whether the optimizer uses momentum OneCycleLR can cycle: Adam-family ``betas`` (beta1), or SGD/RMSprop with
    ``momentum`` > 0 in every group (cycling would otherwise switch momentum on in plain SGD)."""
    groups = optimizer.param_groups
    return all("betas" in g for g in groups) or all(float(g.get("momentum", 0.0) or 0.0) > 0 for g in groups)


def onecycle(
    optimizer: Optimizer,
    total_steps: int,
    max_lr: float | list[float],
    pct_start: float = 0.25,
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    **kwargs: Any,
) -> LRScheduler:
    """The one-cycle policy (Smith & Topin 2019): LR up to ``max_lr`` and down over the run while the momentum (SGD's
    momentum, Adam's beta1) cycles inversely, from ``max_momentum`` down to ``base_momentum`` at the LR's peak and
    back: torch's OneCycleLR with ``cycle_momentum``. Optimizers without momentum (adagrad, adadelta, lbfgs, SGD with
    momentum 0) keep the LR cycle alone; their momentum is left as configured. ``kwargs``: OneCycleLR's other
    arguments (div_factor, final_div_factor, anneal_strategy, three_phase)."""
    cycle = bool(cycle_momentum) and has_momentum(optimizer)
    return OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=max(total_steps, 1),
        pct_start=pct_start,
        cycle_momentum=cycle,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
        **kwargs,
    )


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
