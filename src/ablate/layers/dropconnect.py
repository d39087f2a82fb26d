"""DropConnect (Wan et al. 2013, "Regularization of Neural Networks using DropConnect", ICML).

Hand-written because torch has no DropConnect: ``nn.Dropout`` zeroes *activations*, DropConnect zeroes
individual *weights*, so each output unit sees its own random subset of the inputs.

Conventions used throughout this module:

* **Inverted scaling.** During training each weight is kept with probability ``1 - p`` and kept weights are
  scaled by ``1 / (1 - p)``, so ``E[u] = W v + b`` for the pre-activation ``u``. The paper uses unscaled
  weights ``W'`` with inference mean ``(1 - p) W' v``; the two agree with ``W = (1 - p) W'``. Consequently
  mean-field inference ("mean") uses ``W`` unchanged, and the paper's moment-matched Gaussian
  ``N((1-p) W' v, p (1-p) (W'*W') (v*v))`` becomes ``N(W v + b, p / (1 - p) (W*W) (v*v))``.
* **Biases are never masked** (only the weight matrix / filters are), and are added to the mean.
* **The layer can carry its activation.** The paper's sampling inference averages *after* the nonlinearity,
  ``r = mean_s a(u_s)``, so a layer in ``inference="sample"`` mode must know ``a``. ``activation`` is applied
  inside ``forward`` in every mode and phase, so switching modes never changes what the layer computes
  beyond the inference rule itself. ``activation=None`` means identity (a drop-in ``nn.Linear``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ablate.layers.per_example_mask import PerExampleMaskedLinear, examples_per_chunk

__all__ = ["DropConnectConv2d", "DropConnectLinear"]  # the converter: ablate.layers.dropconnect_convert

Inference = Literal["mean", "sample"]
Activation = nn.Module | Callable[[Tensor], Tensor] | None


def _check_p(p: float) -> float:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"DropConnect drop probability p must be in [0, 1), got {p!r}")
    return float(p)


class _DropConnectMixin:
    """Shared forward logic; concrete classes supply the masked and per-sample pre-activations."""

    p: float
    per_sample: bool
    inference: Inference
    num_samples: int
    activation: Activation
    training: bool
    weight: nn.Parameter

    def _init_dropconnect(
        self, p: float, per_sample: bool, inference: str, activation: Activation, num_samples: int
    ) -> None:
        if inference not in ("mean", "sample"):
            raise ValueError(f"inference must be 'mean' or 'sample', got {inference!r}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.p = _check_p(p)
        self.per_sample = bool(per_sample)
        self.inference = inference  # type: ignore[assignment]
        self.num_samples = int(num_samples)
        self.activation = activation

    def sample_mask(self, batch_size: int | None = None) -> Tensor:
        """Keep-mask (1 = kept, probability ``1 - p``): the weight's shape (one per mini-batch, float), or
        ``(batch_size, *weight.shape)`` (one per example, bool).

        The per-batch draw keeps ``bernoulli_`` so that existing runs reproduce. The per-example draw is
        ``uniform < 1 - p`` (the same Bernoulli law; ``bernoulli_`` with a scalar is ~10x slower on CPU, and this
        draw is B times larger), written chunk by chunk into a bool tensor: 1 byte per entry, never a full-size
        float temporary."""
        if batch_size is None:
            return torch.empty(self.weight.shape, device=self.weight.device, dtype=self.weight.dtype).bernoulli_(
                1.0 - self.p
            )
        mask = torch.empty((batch_size, *self.weight.shape), device=self.weight.device, dtype=torch.bool)
        step = examples_per_chunk(self.weight.numel())
        uniform = torch.empty((min(step, batch_size), *self.weight.shape), device=mask.device, dtype=self.weight.dtype)
        for start in range(0, batch_size, step):
            part = mask[start : start + step]
            torch.lt(uniform[: len(part)].uniform_(), 1.0 - self.p, out=part)
        return mask

    def _act(self, u: Tensor) -> Tensor:
        return u if self.activation is None else self.activation(u)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.p > 0:
            if self.per_sample:
                u = self._per_sample_forward(x)
            else:  # one mask for the whole mini-batch, drawn afresh on every call
                u = self._weight_forward(x, self.weight * self.sample_mask() / (1.0 - self.p))
        elif self.inference == "sample" and self.p > 0:
            mean, var = self._moments(x)
            eps = torch.randn((self.num_samples, *mean.shape), device=mean.device, dtype=mean.dtype)
            return self._act(mean + var.sqrt() * eps).mean(0)  # activation inside the average (paper, Alg. 2)
        else:
            u = self._weight_forward(x, self.weight)
        return self._act(u)

    def _moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of the training-time pre-activation under the random weight mask."""
        mean = self._weight_forward(x, self.weight)
        var = self._weight_forward(x * x, self.weight * self.weight, bias=False) * (self.p / (1.0 - self.p))
        return mean, var

    def _weight_forward(self, x: Tensor, weight: Tensor, bias: bool = True) -> Tensor:
        raise NotImplementedError

    def _per_sample_forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _dropconnect_repr(self) -> str:
        return f"p={self.p}, per_sample={self.per_sample}, inference={self.inference!r}, num_samples={self.num_samples}"


class DropConnectLinear(_DropConnectMixin, nn.Linear):
    """``nn.Linear`` whose weight entries are dropped independently with probability ``p`` while training.

    Args:
        p: probability of dropping each weight entry, in [0, 1).
        per_sample: ``False`` draws one mask per forward call, shared by the mini-batch (cheap: one masked
            matmul). ``True`` draws an independent mask for every sample along dim 0, as in the paper (and the
            authors' code): ``(B, out, in)`` bool masks and a batched matmul per chunk of samples
            (:class:`PerExampleMaskedLinear`); ~80x the per-batch step on CPU for 784-800-800-10 at B = 128
            (experiments/dropconnect/README.md). Extra dims between the batch and feature dims share their
            sample's mask.
        inference: ``"mean"`` (deterministic mean-field: ``a(W v + b)``) or ``"sample"`` (the paper's
            Gaussian moment matching: ``mean_s a(u_s)``, ``u_s ~ N(W v + b, p/(1-p) (W*W)(v*v))``).
        activation: applied to the pre-activation in every mode; needed inside the average for "sample".
        num_samples: Gaussian samples per unit for ``inference="sample"``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        p: float = 0.5,
        per_sample: bool = False,
        inference: Inference = "mean",
        activation: Activation = None,
        num_samples: int = 16,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_dropconnect(p, per_sample, inference, activation, num_samples)

    def _weight_forward(self, x: Tensor, weight: Tensor, bias: bool = True) -> Tensor:
        return F.linear(x, weight, self.bias if bias else None)

    def _per_sample_forward(self, x: Tensor) -> Tensor:
        squeeze = x.dim() == 1
        xb = x.unsqueeze(0) if squeeze else x
        b = xb.shape[0]
        mask = self.sample_mask(b)  # (B, out, in) bool
        x3 = xb.reshape(b, -1, self.in_features)
        u = PerExampleMaskedLinear.apply(x3, self.weight, mask, 1.0 / (1.0 - self.p))
        u = u.reshape(*xb.shape[:-1], self.out_features)
        if self.bias is not None:
            u = u + self.bias
        return u.squeeze(0) if squeeze else u

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._dropconnect_repr()}"


class DropConnectConv2d(_DropConnectMixin, nn.Conv2d):
    """``nn.Conv2d`` whose filter entries are dropped independently with probability ``p`` while training.

    A dropped filter tap is zero at every spatial position of the output map (the mask is on the shared
    weights, as DropConnect prescribes for weight-shared layers). ``per_sample=True`` gives each sample its
    own filter mask via the grouped-convolution trick: the batch is folded into channels and convolved with
    ``B * groups`` groups, which costs ``B`` times the filter memory but no Python loop.
    The other arguments are as for :class:`DropConnectLinear`; the variance for "sample" inference is
    ``p/(1-p) conv(v*v, W*W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        p: float = 0.5,
        per_sample: bool = False,
        inference: Inference = "mean",
        activation: Activation = None,
        num_samples: int = 16,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device=device,
            dtype=dtype,
        )
        self._init_dropconnect(p, per_sample, inference, activation, num_samples)

    def _weight_forward(self, x: Tensor, weight: Tensor, bias: bool = True) -> Tensor:
        return self._conv_forward(x, weight, self.bias if bias else None)

    def _per_sample_forward(self, x: Tensor) -> Tensor:
        squeeze = x.dim() == 3
        xb = x.unsqueeze(0) if squeeze else x
        b, c, h, w = xb.shape
        weights = self.weight * self.sample_mask(b) / (1.0 - self.p)  # (B, out, in/groups, kh, kw)
        weights = weights.reshape(b * self.out_channels, *self.weight.shape[1:])
        xg = xb.reshape(1, b * c, h, w)
        padding = self.padding
        if self.padding_mode != "zeros":
            xg = F.pad(xg, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, 0)
        u = F.conv2d(xg, weights, None, self.stride, padding, self.dilation, b * self.groups)
        u = u.reshape(b, self.out_channels, *u.shape[-2:])
        if self.bias is not None:
            u = u + self.bias.view(1, -1, 1, 1)
        return u.squeeze(0) if squeeze else u

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._dropconnect_repr()}"
