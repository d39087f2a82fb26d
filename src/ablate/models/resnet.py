"""CIFAR-style ResNet (He et al. 2016, section 4.2): depth 6n+2, three stages of 16/32/64 channels.

Stochastic depth (Huang et al. 2016) drops whole residual branches: block l of L survives with probability
p_l = 1 - (l / L) * (1 - p_L) (linear decay). ``stochastic_depth_mode`` picks what one draw covers (both are
torchvision.ops.StochasticDepth): "batch" is the paper's rule, one draw per block for the whole mini-batch; "row"
draws per sample. Scaling: the paper trains the branch unscaled and multiplies it by p_l at test time;
torchvision scales a kept branch by 1 / p_l in training and is the identity at test time ("inverted" scaling).
Both give the same expected output, so the trained networks are equivalent up to that constant reparametrization.
A dropped branch is still computed (and updates its BatchNorm running statistics); the paper skips it, which is
where its training speed-up comes from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from ablate.errors import ConfigError
from ablate.models.activations import make_activation

VALID_DEPTHS = "6n+2, e.g. 20, 32, 44, 56, 110"
STOCHASTIC_DEPTH_MODES = ("row", "batch")


def survival_probabilities(num_blocks: int, survival_last: float) -> list[float]:
    """The linear-decay rule: p_l = 1 - (l / L) * (1 - p_L) for l = 1..L."""
    return [1.0 - (layer / num_blocks) * (1.0 - survival_last) for layer in range(1, num_blocks + 1)]


class BasicBlock(nn.Module):
    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        activation: str,
        batchnorm: bool,
        drop: float,
        drop_mode: str = "row",
    ):
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if batchnorm else (lambda c: nn.Identity())
        self.branch = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=not batchnorm),
            norm(out_ch),
            make_activation(activation),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=not batchnorm),
            norm(out_ch),
        )
        self.drop_branch = StochasticDepth(drop, mode=drop_mode)
        self.pad = out_ch - in_ch  # option A shortcut: subsample + zero-pad channels, no parameters
        self.stride = stride
        self.out_act = make_activation(activation)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_act(self.shortcut(x) + self.drop_branch(self.branch(x)))


class ResNet(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        depth: int = 20,
        width: int = 16,
        activation: str = "relu",
        batchnorm: bool = True,
        stochastic_depth: float = 1.0,
        stochastic_depth_mode: str = "row",
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"model.depth={depth} is not a CIFAR ResNet depth; use {VALID_DEPTHS}")
        if not 0.0 < stochastic_depth <= 1.0:
            raise ConfigError(f"stochastic depth survival p_L must be in (0, 1], got {stochastic_depth}")
        if stochastic_depth_mode not in STOCHASTIC_DEPTH_MODES:
            raise ConfigError(
                f"stochastic depth mode must be one of {list(STOCHASTIC_DEPTH_MODES)}, got {stochastic_depth_mode!r}"
            )
        if activation == "maxout":
            raise ConfigError(
                "model.activation=maxout is not supported by resnet (it halves channels); use mlp or convnet"
            )
        n = (depth - 2) // 6
        survival = survival_probabilities(3 * n, stochastic_depth)
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=not batchnorm),
            nn.BatchNorm2d(width) if batchnorm else nn.Identity(),
            make_activation(activation),
        )
        blocks, in_ch = [], width
        for stage, out_ch in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                drop = 1.0 - survival[len(blocks)]
                blocks.append(BasicBlock(in_ch, out_ch, stride, activation, batchnorm, drop, stochastic_depth_mode))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))
