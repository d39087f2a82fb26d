"""Fractional max-pooling (Graham 2014, "Fractional Max-Pooling", arXiv:1412.6071).

Hand-written because ``torch.nn.FractionalMaxPool2d`` implements only one flavour (random, fixed-size
windows); Graham's method is defined by a sequence of pooling-region boundaries and comes in four variants:
*random* or *pseudorandom* increments, with *disjoint* or *overlapping* regions.

For a dimension of size ``n_in`` pooled to ``n_out`` (``alpha = n_in / n_out``, in (1, 2) in the paper) the
boundaries are an increasing integer sequence ``0 = a_0 < a_1 < ... < a_{n_out} = n_in`` whose increments
are ``floor(alpha)`` or ``floor(alpha) + 1`` (1 or 2 in the paper's range):

* random: a uniformly random permutation of the right number of short and long increments;
* pseudorandom: ``a_i = ceil(alpha (i + u)) - ceil(alpha u)`` with ``u ~ U(0, 1)``, i.e. increments
  ``ceil(alpha (i + u)) - ceil(alpha (i - 1 + u))`` (the paper's formula, shifted to start at 0).

Pooling regions (0-based, inclusive) are ``P_i = [a_{i-1}, a_i - 1]`` (disjoint: the sequence ends at ``n_in`` and
the regions partition the input) or ``P_i = [a_{i-1}, a_i]`` (overlapping: neighbours share one row). In the paper's
1-based notation an overlapping sequence runs from 1 to ``N_in``, so its last region ends on the last row: here the
overlapping sequence ends at ``n_in - 1`` (alpha = (n_in - 1) / n_out), every region keeps its full size 2 or 3 and
none is clipped. Graham's own code (SparseConvNet, ``*OverlappingFmpTicks``) likewise makes the last region end
exactly at the input's edge. Rows and columns get independent sequences and the 2-D regions are their products.

Output size: ``N_out = round(N_in / alpha)``, at most ``N_in - 1`` (overlapping). This is the rounding of Graham's
networks, whose sizes his code computes from the output backwards as ``N_in = round(N_out * alpha)``
(``calculateInputSpatialSize``: ``outputSpatialSize * fmpShrink + 0.5``); rounding forwards reproduces both of the
paper's networks exactly (MNIST 36x36 with alpha = sqrt(2): 6 FMP layers; CIFAR-100 94x94 with alpha = 2^(1/3): 12),
where flooring loses a layer.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "FractionalMaxPool2d",
    "fmp_boundaries",
    "fmp_output_size",
    "fmp_pool2d",
    "fmp_regions",
    "fmp_span",
    "fmp_test_time_average",
]

Mode = Literal["random", "pseudorandom"]


def fmp_output_size(n_in: int, ratio: float, overlapping: bool = False) -> int:
    """Default output size ``round(n_in / ratio)`` (Graham's rounding, see the module docstring), at least 1 and, for
    overlapping regions (which need a step of at least one row each), at most ``n_in - 1``."""
    if ratio < 1:
        raise ValueError(f"fractional pooling ratio must be >= 1, got {ratio}")
    n_out = max(1, math.floor(n_in / ratio + 0.5))  # round half up, as Graham's int(x + 0.5)
    return max(1, min(n_out, n_in - 1)) if overlapping else n_out


def fmp_span(n_in: int, overlapping: bool) -> int:
    """Where the boundary sequence ends: ``n_in`` for disjoint regions, ``n_in - 1`` for overlapping ones (so the
    last overlapping region ``[a_{n_out - 1}, a_{n_out}]`` ends on the last row instead of being clipped)."""
    return max(n_in - 1, 0) if overlapping else n_in


def fmp_boundaries(
    n_in: int,
    n_out: int,
    mode: Mode = "random",
    generator: torch.Generator | None = None,
    u: float | None = None,
) -> Tensor:
    """Sample Graham's boundary sequence ``0 = a_0 < ... < a_{n_out} = n_in`` (int64, CPU, length n_out + 1).

    The sequence is the same for disjoint and overlapping pooling; overlap is a property of the regions
    built from it (:func:`fmp_regions`). ``u`` fixes the pseudorandom offset (else drawn from ``generator``).
    """
    if not 1 <= n_out <= n_in:
        raise ValueError(f"need 1 <= n_out <= n_in, got n_in={n_in}, n_out={n_out}")
    k = n_in // n_out  # short increment; long ones are k + 1
    if mode == "random":
        incs = torch.full((n_out,), k, dtype=torch.long)
        n_long = n_in - k * n_out
        incs[torch.randperm(n_out, generator=generator)[:n_long]] += 1
        return torch.cat([torch.zeros(1, dtype=torch.long), incs.cumsum(0)])
    if mode == "pseudorandom":
        if u is None:
            u = float(torch.rand((), generator=generator, dtype=torch.float64))
        c = n_in / n_out * u
        # alpha * i = q + r / n_out exactly in integers, so a_{n_out} = n_in with no rounding error.
        i = torch.arange(n_out + 1, dtype=torch.long)
        q, r = torch.div(n_in * i, n_out, rounding_mode="floor"), (n_in * i) % n_out
        return q + torch.ceil(r.double() / n_out + c).long() - math.ceil(c)
    raise ValueError(f"mode must be 'random' or 'pseudorandom', got {mode!r}")


def fmp_regions(boundaries: Tensor, overlapping: bool) -> tuple[Tensor, Tensor]:
    """Inclusive ``(starts, ends)`` of the pooling regions defined by a boundary sequence (which ends at
    :func:`fmp_span`)."""
    starts = boundaries[:-1]
    ends = boundaries[1:] if overlapping else boundaries[1:] - 1
    return starts, ends


def _sample_boundaries(n_in: int, n_out: int, overlapping: bool, mode: Mode, gen: torch.Generator | None) -> Tensor:
    span = fmp_span(n_in, overlapping)
    if span == 0:  # a single row pooled with overlap: the one region [0, 0]
        return torch.zeros(2, dtype=torch.long)
    return fmp_boundaries(span, n_out, mode, gen)


def _pool_dim(x: Tensor, dim: int, boundaries: Tensor, overlapping: bool) -> Tensor:
    """Max over each region along ``dim`` with one gather: regions are padded to the widest by repeating
    their last index (harmless for a max), then reduced."""
    starts, ends = fmp_regions(boundaries.to(x.device), overlapping)
    width = int((ends - starts).max()) + 1
    idx = torch.minimum(starts[:, None] + torch.arange(width, device=x.device), ends[:, None])
    dim = dim % x.dim()
    gathered = x.index_select(dim, idx.flatten())
    shape = (*x.shape[:dim], len(starts), width, *x.shape[dim + 1 :])
    return gathered.view(shape).amax(dim + 1)


def fmp_pool2d(x: Tensor, row_boundaries: Tensor, col_boundaries: Tensor, overlapping: bool) -> Tensor:
    """Max-pool the last two dims of ``x`` over the regions given by the two boundary sequences.

    Separable: the max over a rectangle is the max over its columns of the max over its rows, so this is two
    vectorised gathers (no loop over batch, channels or regions).
    """
    want = (fmp_span(x.shape[-2], overlapping), fmp_span(x.shape[-1], overlapping))
    if (int(row_boundaries[-1]), int(col_boundaries[-1])) != want:
        ends = f"{int(row_boundaries[-1])}x{int(col_boundaries[-1])}"
        raise ValueError(f"boundaries end at {ends}, but {x.shape[-2]}x{x.shape[-1]} inputs need {want[0]}x{want[1]}")
    return _pool_dim(_pool_dim(x, -2, row_boundaries, overlapping), -1, col_boundaries, overlapping)


def _pair(v: float | tuple[float, float]) -> tuple[float, float]:
    return (v, v) if isinstance(v, int | float) else (v[0], v[1])


class FractionalMaxPool2d(nn.Module):
    """Graham's fractional max-pooling over the last two dims of ``(B, C, H, W)`` or ``(C, H, W)`` inputs.

    Args:
        ratio: reduction factor ``alpha`` per dim (default ``sqrt(2)``, the paper's choice); the output size
            is :func:`fmp_output_size` (``round(n_in / ratio)``). Mutually exclusive with ``output_size``.
        output_size: fixed ``(H_out, W_out)`` instead of a ratio.
        mode: ``"random"`` or ``"pseudorandom"`` increments.
        overlapping: overlapping regions ``[a_{i-1}, a_i]`` instead of disjoint ``[a_{i-1}, a_i - 1]``.
        eval_fixed_seed: if set, eval-mode forwards use regions drawn from a generator reseeded with it each
            call (deterministic evaluation); by default FMP stays stochastic at test time, as in the paper,
            and predictions are averaged over repeats (:func:`fmp_test_time_average`).

    One pair of row/column sequences is drawn per forward call and shared by the whole batch, as in the
    paper (and what makes the layer cheap). Sampling uses the global CPU RNG, so ``torch.manual_seed``
    reproduces it.
    The sequences used last are kept in ``last_boundaries`` for inspection.
    """

    def __init__(
        self,
        ratio: float | tuple[float, float] | None = None,
        output_size: int | tuple[int, int] | None = None,
        mode: Mode = "random",
        overlapping: bool = True,
        eval_fixed_seed: int | None = None,
    ) -> None:
        super().__init__()
        if ratio is not None and output_size is not None:
            raise ValueError("give either ratio or output_size, not both")
        if mode not in ("random", "pseudorandom"):
            raise ValueError(f"mode must be 'random' or 'pseudorandom', got {mode!r}")
        self.ratio = None if output_size is not None else _pair(math.sqrt(2) if ratio is None else ratio)
        if self.ratio is not None and min(self.ratio) < 1:
            raise ValueError(f"fractional pooling ratio must be >= 1, got {ratio}")
        self.output_size = None if output_size is None else tuple(int(s) for s in _pair(output_size))
        self.mode = mode
        self.overlapping = overlapping
        self.eval_fixed_seed = eval_fixed_seed
        self.last_boundaries: tuple[Tensor, Tensor] | None = None

    def _out_sizes(self, h: int, w: int) -> tuple[int, int]:
        if self.output_size is not None:
            return self.output_size  # type: ignore[return-value]
        assert self.ratio is not None
        ov = self.overlapping
        return fmp_output_size(h, self.ratio[0], ov), fmp_output_size(w, self.ratio[1], ov)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        h_out, w_out = self._out_sizes(h, w)
        gen = None
        if not self.training and self.eval_fixed_seed is not None:
            gen = torch.Generator().manual_seed(self.eval_fixed_seed)
        rows = _sample_boundaries(h, h_out, self.overlapping, self.mode, gen)
        cols = _sample_boundaries(w, w_out, self.overlapping, self.mode, gen)
        self.last_boundaries = (rows, cols)
        return fmp_pool2d(x, rows, cols, self.overlapping)

    def extra_repr(self) -> str:
        size = f"output_size={self.output_size}" if self.output_size else f"ratio={self.ratio}"
        seed = self.eval_fixed_seed
        return f"{size}, mode={self.mode!r}, overlapping={self.overlapping}, eval_fixed_seed={seed}"


@torch.no_grad()
def fmp_test_time_average(
    model: nn.Module,
    x: Tensor,
    repeats: int,
    softmax: bool = True,
) -> Tensor:
    """Average of ``repeats`` stochastic eval-mode predictions (Graham 2014, Sec. 3: "model averaging").

    Each pass draws fresh pooling regions, so the passes act like an ensemble. The paper averages the
    *predictions*, i.e. class probabilities: with ``softmax=True`` (default) the model's outputs are treated
    as logits and ``softmax(dim=-1)`` is applied before averaging; ``softmax=False`` averages raw outputs.
    The model's train/eval mode is restored afterwards.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    was_training = model.training
    model.eval()
    try:
        preds = [model(x) for _ in range(repeats)]
        return torch.stack([p.softmax(dim=-1) if softmax else p for p in preds]).mean(0)
    finally:
        model.train(was_training)
