"""Multilayer perceptron: depth x (Linear [-> BatchNorm] -> activation [-> Dropout]) -> Linear.

``widths`` gives each hidden layer its own size (e.g. Srivastava et al. 2014's 784-1024-1024-2048-10 is
``widths=[1024, 1024, 2048]``) and then replaces ``depth`` and ``width``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from ablate.errors import ConfigError, require_probability
from ablate.models.activations import make_activation, width_factor


class MLP(nn.Sequential):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        depth: int = 2,
        width: int = 256,
        activation: str = "relu",
        batchnorm: bool = False,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        widths: Sequence[int] | None = None,
    ) -> None:
        if depth < 0 or width < 1:
            raise ConfigError(f"model.depth must be >= 0 and model.width >= 1 (got {depth}, {width})")
        if widths is not None and any(int(w) < 1 for w in widths):
            raise ConfigError(f"model.widths must be hidden layer sizes >= 1, got {list(widths)}")
        sizes = [int(w) for w in widths] if widths is not None else [width] * depth
        for name, p in (("dropout", dropout), ("input_dropout", input_dropout)):
            require_probability(f"model.{name}", p)
        layers: list[nn.Module] = [nn.Flatten()]
        if input_dropout:
            layers.append(nn.Dropout(input_dropout))
        features = math.prod(input_shape)
        for width in sizes:
            layers.append(nn.Linear(features, width * width_factor(activation), bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(width * width_factor(activation)))
            layers.append(make_activation(activation))
            if dropout:
                layers.append(nn.Dropout(dropout))
            features = width
        layers.append(nn.Linear(features, num_classes))
        super().__init__(*layers)
