"""Backbones for model=transfer: a torchvision classification model by name (optionally with its pretrained weights)
or one of this project's models; the stem adapted to the data's channels; the classifier found and removed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from torch import nn

from ablate.errors import ConfigError

# This project's models usable as backbones (their own kwargs go in ``backbone_args``).
PROJECT_BACKBONES = {
    "mlp": "ablate.models.MLP",
    "convnet": "ablate.models.ConvNet",
    "resnet": "ablate.models.ResNet",
    "fmpnet": "ablate.models.FMPNet",
}


def build_backbone(
    name: str, args: Mapping[str, Any], input_shape: tuple[int, int, int], num_classes: int, pretrained: bool
) -> nn.Module:
    if name in PROJECT_BACKBONES:
        if pretrained:
            raise ConfigError(f"model.pretrained=true needs a torchvision backbone; {name} is this project's model")
        try:
            return get_class(PROJECT_BACKBONES[name])(input_shape=input_shape, num_classes=num_classes, **args)
        except TypeError as err:
            raise ConfigError(f"model.backbone_args for {name}: {err}") from None
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ConfigError(
            f"model.backbone '{name}' is unknown; use one of {sorted(PROJECT_BACKBONES)} or a torchvision "
            f"classification model (e.g. resnet18, mobilenet_v3_small, efficientnet_b0; {len(available)} in all)"
        )
    try:
        net = torchvision.models.get_model(name, weights=None, **args)
    except TypeError as err:
        raise ConfigError(f"model.backbone_args for {name}: {err}") from None
    if pretrained:
        net.load_state_dict(pretrained_state_dict(name))
    _adapt_stem(net, input_shape[0])
    return net


def pretrained_state_dict(name: str) -> dict[str, torch.Tensor]:
    """torchvision's default weights for ``name``, from the torch hub cache (TORCH_HOME) or downloaded into it."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise ConfigError(f"torchvision has no pretrained weights for {name}; set model.pretrained=false") from None
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return torch.hub.load_state_dict_from_url(weights.url, progress=False, map_location="cpu", weights_only=True)
    except Exception as err:  # no network, proxy, disk: all mean "not available here"; say how to get them
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"pretrained weights {weights} for {name} are not in the cache ({cache}) and could not be downloaded "
            f"({reason}); run once with internet, or copy {weights.url} to {cache} (TORCH_HOME sets the cache "
            "folder), or set model.pretrained=false"
        ) from None


def first_conv(net: nn.Module) -> tuple[str, nn.Conv2d] | None:
    return next(((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)), None)


def adapt_input_conv(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Stem weights (out, c, k, k) for ``channels`` inputs: summed for 1, else tiled and scaled by c/channels.

    The same rule as timm's ``adapt_input_conv`` (10 lines; timm is not a dependency).
    """
    c = weight.shape[1]
    if channels == c:
        return weight
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeat = math.ceil(channels / c)
    return weight.repeat(1, repeat, 1, 1)[:, :channels] * (c / channels)


def _adapt_stem(net: nn.Module, channels: int) -> None:
    found = first_conv(net)
    if found is None or found[1].in_channels == channels:
        return
    name, conv = found
    if conv.groups != 1:
        raise ConfigError(f"cannot adapt the grouped stem convolution {name} to {channels} input channels")
    new = nn.Conv2d(
        channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(adapt_input_conv(conv.weight, channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    net.set_submodule(name, new)


def replace_last_linear(net: nn.Module, backbone: str) -> tuple[str, int]:
    """Replace the backbone's classifier (its last nn.Linear) with Identity; return its name and input width."""
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"backbone {backbone} has no nn.Linear classifier to replace; pick another backbone")
    name, linear = linears[-1]
    net.set_submodule(name, nn.Identity())
    return name, linear.in_features
