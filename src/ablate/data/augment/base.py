"""The two kinds of batched op and the random draws they share.

Every op draws its parameters as (B,)-shaped tensors on the generator's device (or from the global RNG without one)
and moves them to the batch's device; torchvision transforms, which draw from the global CPU RNG only, run inside a
global RNG forked and seeded from the generator (:func:`global_rng_from`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

# ------------------------------------------------------------------------------------ random helpers


def rand(shape: int | tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """float32 draws from U[0, 1) on ``like``'s device (made on the generator's device if one is given)."""
    if generator is None:
        return torch.rand(shape, device=like.device)
    return torch.rand(shape, generator=generator, device=generator.device).to(like.device)


def uniform(n: int, low: float, high: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return rand(n, like, generator).mul_(high - low).add_(low)


def randint(high: int, n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """``n`` int64 draws from {0, ..., high - 1} on ``like``'s device."""
    if generator is None:
        return torch.randint(high, (n,), device=like.device)
    return torch.randint(high, (n,), generator=generator, device=generator.device).to(like.device)


def coin(generator: torch.Generator | None) -> bool:
    """A fair coin flip, drawn on the CPU unless the generator lives elsewhere (no GPU sync by default)."""
    device = "cpu" if generator is None else generator.device
    return bool(torch.rand((), generator=generator, device=device) < 0.5)


@contextmanager
def global_rng_from(generator: torch.Generator | None) -> Iterator[None]:
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
