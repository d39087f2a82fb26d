"""Layer families by torch's public classes, for ``isinstance`` tests.

torch groups them under private bases (``nn.modules.batchnorm._BatchNorm``, ``nn.modules.dropout._DropoutNd``);
naming the public classes keeps this project off torch's private names. The lists are those bases' public
subclasses in torch 2.14 (pyproject's range); the lazy batch norms become ``BatchNorm{1,2,3}d`` at their first
forward pass and are listed for models inspected before it.
"""

from __future__ import annotations

from torch import nn

BATCH_NORMS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.LazyBatchNorm1d,
    nn.LazyBatchNorm2d,
    nn.LazyBatchNorm3d,
)

DROPOUTS: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
