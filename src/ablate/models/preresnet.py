"""Pre-activation ResNet for CIFAR (He et al. 2016, "Identity Mappings in Deep Residual Networks"): the network of
Izmailov et al.'s SWA experiments (PreResNet-164), whose code builds it as bearpaw/pytorch-classification does.

Each residual branch starts with BatchNorm and the activation (BN-act-conv), and nothing follows the addition, so the
shortcut path is a pure identity from the input to the last BN-act before pooling. Depth >= 44: bottleneck blocks
(1x1, 3x3, 1x1 with 4x expansion), depth 9n+2 (164 = 3 stages x 18 blocks); below 44: basic blocks (two 3x3),
depth 6n+2. Shortcuts that change shape are a strided 1x1 convolution (no BN, as in the SWA code). Convolutions are
He-initialized with fan_out (normal, std sqrt(2 / (k*k*out_channels))), BN gamma 1 and beta 0.

Why beside ``ResNet``: our post-activation ResNet (relu after every addition, BN at the end of each branch) adds
one unit-variance branch per block to the signal, so at depth 164 its logits start far from uniform (initial loss ~4
vs ln 10 = 2.3) and SGD at the paper's lr 0.1 blows up in its first steps; the pre-activation net starts at ~ln 10.
"""

from __future__ import annotations

import torch
from torch import nn

from ablate.errors import ConfigError
from ablate.models.activations import make_activation

BOTTLENECK_FROM = 44  # the SWA code's switch: bottleneck blocks from depth 44 on
EXPANSION = 4  # bottleneck output channels = 4 x its inner width


class PreActBlock(nn.Module):
    """BN-act-conv3x3, BN-act-conv3x3; the shortcut is the input, or a strided 1x1 conv when the shape changes."""

    def __init__(self, in_ch: int, width: int, stride: int, activation: str, bottleneck: bool) -> None:
        super().__init__()
        out_ch = self.out_ch = width * EXPANSION if bottleneck else width
        if bottleneck:
            kernels = [(in_ch, width, 1, 1), (width, width, 3, stride), (width, out_ch, 1, 1)]
        else:
            kernels = [(in_ch, width, 3, stride), (width, out_ch, 3, 1)]
        layers: list[nn.Module] = []
        for cin, cout, k, s in kernels:
            layers += [nn.BatchNorm2d(cin), make_activation(activation), nn.Conv2d(cin, cout, k, s, k // 2, bias=False)]
        self.branch = nn.Sequential(*layers)
        self.shortcut = (
            nn.Conv2d(in_ch, out_ch, 1, stride, bias=False) if stride != 1 or in_ch != out_ch else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.shortcut(x)


class PreResNet(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        depth: int = 164,
        width: int = 16,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        bottleneck = depth >= BOTTLENECK_FROM
        per_block = 9 if bottleneck else 6
        if depth < 8 or (depth - 2) % per_block:
            raise ConfigError(
                f"model.depth={depth} is not a PreResNet depth: 9n+2 from 44 on (bottleneck blocks, e.g. 110, 164), "
                "6n+2 below (basic blocks, e.g. 20, 32)"
            )
        if activation == "maxout":
            raise ConfigError("model.activation=maxout is not supported by preresnet (it halves channels)")
        n = (depth - 2) // per_block
        self.stem = nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False)
        blocks, in_ch = [], width
        for stage, inner in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(PreActBlock(in_ch, inner, 2 if stage > 0 and i == 0 else 1, activation, bottleneck))
                in_ch = blocks[-1].out_ch
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            make_activation(activation),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(in_ch, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))
