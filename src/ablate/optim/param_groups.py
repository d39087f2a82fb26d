"""Parameter groups for the optimizer: optionally exempt biases and normalization parameters from weight decay, and
give a model's ``backbone`` a scaled learning rate (transfer learning: ``optimizer.backbone_lr_scale``)."""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module, decay_bias_and_norm: bool, backbone_lr_scale: float = 1.0) -> list[dict]:
    """One group, or two where 1-D tensors (biases, BatchNorm/LayerNorm affine) get ``weight_decay=0``.

    Decaying a bias or a norm gain pulls it towards zero for no generalization benefit (Goyal et al. 2017).
    With ``backbone_lr_scale != 1`` the parameters of ``model.backbone`` form their own groups tagged
    ``lr_scale``; :func:`scale_group_lrs` applies the scale once the optimizer has filled in its default LR.
    Frozen parameters (``requires_grad=False``) are left out.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    parts = [(1.0, params)]
    if backbone_lr_scale != 1.0:
        in_backbone = {id(p) for p in model.backbone.parameters()}
        parts = [(1.0, [p for p in params if id(p) not in in_backbone])]
        parts.append((backbone_lr_scale, [p for p in params if id(p) in in_backbone]))
    groups: list[dict] = []
    for scale, part in parts:
        tag = {"lr_scale": scale} if backbone_lr_scale != 1.0 else {}
        if decay_bias_and_norm:
            candidates = [{"params": part, **tag}]
        else:
            decay = [p for p in part if p.ndim > 1]
            no_decay = [p for p in part if p.ndim <= 1]
            candidates = [{"params": decay, **tag}, {"params": no_decay, "weight_decay": 0.0, **tag}]
        groups += [g for g in candidates if g["params"]]
    return groups or [{"params": params}]


def scale_group_lrs(optimizer: torch.optim.Optimizer) -> None:
    """Multiply each group's LR by its ``lr_scale`` tag (set by :func:`param_groups`)."""
    for group in optimizer.param_groups:
        if group.get("lr_scale", 1.0) != 1.0:
            group["lr"] = group["lr"] * group["lr_scale"]


def is_lbfgs(optimizer: object) -> bool:
    """Whether an optimizer factory (a partial of the class, as Hydra builds it) makes L-BFGS: the one object-level
    test (a single parameter group, a closure called several times per step, no accumulation, no channels_last)."""
    return getattr(optimizer, "func", optimizer) is torch.optim.LBFGS
