"""FMP network (Graham 2014): (32nC2 - FMP)^k - C2 - C1 - output, scaled to the input size.

Layer n (1..k) is a 2x2 convolution with 32n filters followed by fractional max pooling by ``fmp_ratio``;
k is the largest depth that leaves at least a 2x2 map for the final C2. Each FMP layer maps N to round(N / alpha)
(:func:`ablate.layers.fmp_output_size`, Graham's rounding), which reproduces the paper's networks: its MNIST net on
36x36 inputs (28x28 zero-padded by 4 on every side: ``data.pad=4``) is (32nC2 - FMP sqrt2)^6 - C2 - C1 - output,
36 -C2-> 35 -FMP-> 25 -C2-> 24 -> 17 -> 16 -> 11 -> 10 -> 7 -> 6 -> 4 -> 3 -> 2 -C2-> 1 -C1-> 1; its CIFAR-100 net
on 94x94 inputs with alpha = 2^(1/3) has 12 FMP layers, also ending at 1x1 (Graham 2014, arXiv:1412.6071, Sec. 4;
the sizes follow from his code's ``N_in = round(N_out * alpha)``). ``spatial_sizes`` records the map size after
every layer. The paper's dropout grows with depth; here ``dropout`` is applied before the output layer only.
"""

from __future__ import annotations

import torch
from torch import nn

from ablate.errors import ConfigError
from ablate.layers import FractionalMaxPool2d, fmp_output_size
from ablate.models.activations import make_activation


class FMPNet(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 32,
        fmp_ratio: float = 2**0.5,
        fmp_mode: str = "random",
        fmp_overlapping: bool = True,
        activation: str = "leaky_relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if activation == "maxout":
            raise ConfigError("model.activation=maxout is not supported by fmpnet")
        size = min(input_shape[1:])
        sizes = [size]  # the (smaller) side after every layer: C2, FMP, ..., C2, C1
        layers: list[nn.Module] = []
        in_ch, n = input_shape[0], 0

        def pooled(side: int) -> int:
            return fmp_output_size(side - 1, fmp_ratio, fmp_overlapping)  # C2 (side - 1), then FMP

        while size >= 3 and pooled(size) >= 2:
            n += 1
            layers += [
                nn.Conv2d(in_ch, width * n, 2),
                make_activation(activation),
                FractionalMaxPool2d(ratio=fmp_ratio, mode=fmp_mode, overlapping=fmp_overlapping),
            ]
            in_ch, size = width * n, pooled(size)
            sizes += [sizes[-1] - 1, size]
        if n == 0:
            raise ConfigError(f"fmpnet needs inputs of at least 4x4 pixels, got {input_shape[1:]}")
        layers += [nn.Conv2d(in_ch, width * (n + 1), 2), make_activation(activation)]
        layers += [nn.Conv2d(width * (n + 1), width * (n + 2), 1), make_activation(activation)]
        self.num_fmp_layers = n
        self.spatial_sizes = [*sizes, size - 1, size - 1]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout) if dropout else nn.Identity(),
            nn.Linear(width * (n + 2), num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
