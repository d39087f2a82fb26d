"""Swapping a model's linear (and conv) layers for DropConnect layers in place, keeping their parameters, and folding
the element-wise activation that follows a layer into it (sampled inference averages after the nonlinearity)."""

from __future__ import annotations

import warnings
from typing import Literal

from torch import nn

from ablate.layers.dropconnect import DropConnectConv2d, DropConnectLinear, Inference, _check_p

# Element-wise activations that convert_to_dropconnect folds into a layer for sampled inference.
_FOLDABLE_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
)


def _to_dropconnect(module: nn.Module, p: float, per_sample: bool, inference: Inference) -> nn.Module:
    # Built on the meta device (no allocation, no re-initialisation); the parameters are taken over below.
    kwargs = {"p": p, "per_sample": per_sample, "inference": inference, "device": "meta"}
    has_bias = module.bias is not None
    if isinstance(module, nn.Linear):
        new: nn.Module = DropConnectLinear(module.in_features, module.out_features, has_bias, **kwargs)
    else:
        assert isinstance(module, nn.Conv2d)
        m = module
        new = DropConnectConv2d(
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            m.stride,
            m.padding,
            m.dilation,
            m.groups,
            has_bias,
            m.padding_mode,
            **kwargs,
        )
    # Take over the original Parameter objects: values are kept and existing optimizer references stay valid.
    new.weight = module.weight
    new.bias = module.bias
    new.train(module.training)
    return new


def convert_to_dropconnect(
    model: nn.Module,
    p: float,
    layers: Literal["linear", "linear+conv"] = "linear",
    exclude_last: bool = True,
    per_sample: bool = False,
    inference: Inference = "mean",
) -> int:
    """Replace ``nn.Linear`` (and, with ``layers="linear+conv"``, ``nn.Conv2d``) modules in place.

    Only modules whose type is exactly ``nn.Linear`` / ``nn.Conv2d`` are swapped (subclasses such as the
    output projection of ``nn.MultiheadAttention`` bypass ``forward``, so masking them would be a no-op).
    With ``exclude_last`` the last candidate in registration order (the output layer in any ordinary
    model) is left alone: dropping weights of the classifier head is not what the paper regularises.
    The new layers reuse the original ``Parameter`` objects.

    For ``inference="sample"`` the paper averages *after* the nonlinearity, so a layer directly followed by an
    element-wise activation inside an ``nn.Sequential`` takes that activation over (the Sequential slot
    becomes ``nn.Identity``); a warning names the layers for which no activation could be folded.

    Returns:
        the number of modules replaced.
    """
    _check_p(p)
    if layers not in ("linear", "linear+conv"):
        raise ValueError(f"layers must be 'linear' or 'linear+conv', got {layers!r}")
    if inference not in ("mean", "sample"):
        raise ValueError(f"inference must be 'mean' or 'sample', got {inference!r}")
    kinds: tuple[type[nn.Module], ...] = (nn.Linear,) if layers == "linear" else (nn.Linear, nn.Conv2d)
    named = dict(model.named_modules())
    candidates = [name for name, m in named.items() if name and type(m) in kinds]
    if exclude_last and candidates:
        candidates = candidates[:-1]
    unfolded = []
    for name in candidates:
        parent_name, _, attr = name.rpartition(".")
        parent = named[parent_name]
        new = _to_dropconnect(named[name], p, per_sample, inference)
        if inference == "sample":
            idx = int(attr) + 1 if isinstance(parent, nn.Sequential) else -1
            if 0 < idx < len(parent) and isinstance(parent[idx], _FOLDABLE_ACTIVATIONS):
                new.activation = parent[idx]
                parent[idx] = nn.Identity()
            else:
                unfolded.append(name)
        setattr(parent, attr, new)
    if unfolded:
        warnings.warn(
            f"DropConnect sampled inference: no following activation to fold into {unfolded}; their samples "
            "are averaged before the nonlinearity, which approximates mean-field inference",
            stacklevel=2,
        )
    return len(candidates)
