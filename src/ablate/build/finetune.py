"""The training side of transfer learning (model=transfer): backbone LR scale and staged unfreezing.

Which parameters are frozen is decided when the model is built (``TransferNet.apply_finetune``: ``head``, ``last_n``);
the optimizer then only receives trainable parameters, and frozen BatchNorm layers stay in eval mode. Here:

- ``optimizer.backbone_lr_scale``: the backbone's parameter groups get ``lr * scale`` (``optim.param_groups`` tags the
  groups, ``scale_group_lrs`` applies it; schedulers keep the ratio, see ``optim.schedulers.build_scheduler``).
- ``model.finetune=staged``: Lightning's ``BackboneFinetuning``: the head trains alone until epoch
  ``model.unfreeze_at_epoch``; then the backbone joins as a new parameter group at ``lr * 0.1`` (Lightning's
  default ratio, or ``optimizer.backbone_lr_scale`` when set), doubled every epoch until it reaches the head's LR.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BackboneFinetuning
from lightning.pytorch.callbacks.finetuning import BaseFinetuning
from omegaconf import DictConfig, open_dict
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from ablate.errors import ConfigError
from ablate.models.transfer import TransferNet, freeze
from ablate.optim import build_scheduler

# Frozen BatchNorm layers in eval mode at the start of training are intended here.
warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")


def pop_backbone_lr_scale(node: DictConfig) -> tuple[DictConfig, float]:
    """A copy of the optimizer node without ``backbone_lr_scale`` (torch's optimizers do not take it), and its value
    (the rule book checked it: > 0)."""
    node = node.copy()
    with open_dict(node):
        scale = node.pop("backbone_lr_scale", 1.0)
    return node, float(scale)


class StagedUnfreezing(BackboneFinetuning):
    """Lightning's BackboneFinetuning on ``ClassifierModule.model.backbone`` (a TransferNet), BN frozen with it.

    Changes to Lightning's: the backbone is looked up on the wrapped model; frozen BN layers stay in eval mode (as
    for finetune=head) instead of batch statistics; a run resumed after the unfreezing epoch trains the backbone again
    (Lightning restores its parameter group but not ``requires_grad``).
    """

    def __init__(self, unfreeze_at_epoch: int, initial_ratio: float = 0.1) -> None:
        super().__init__(unfreeze_backbone_at_epoch=unfreeze_at_epoch, backbone_initial_ratio_lr=initial_ratio)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        BaseFinetuning.on_fit_start(self, trainer, pl_module)  # Lightning's subclass insists on pl_module.backbone
        if trainer.current_epoch > self.unfreeze_backbone_at_epoch:
            self.make_trainable(pl_module.model.backbone)
            pl_module.model.train(pl_module.model.training)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        freeze(pl_module.model.backbone)
        pl_module.model.train(pl_module.model.training)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        super().finetune_function(SimpleNamespace(backbone=pl_module.model.backbone), epoch, optimizer)  # type: ignore[arg-type]
        if epoch == self.unfreeze_backbone_at_epoch:
            pl_module.model.train(pl_module.model.training)  # unfrozen BN layers back to training mode


def _check_scheduler_takes_new_groups(scheduler: dict[str, Any] | None) -> None:
    """Staged unfreezing adds a parameter group mid-run; some schedulers keep per-group state and then fail."""
    if not scheduler:
        return
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping a scheduler without optimizer steps is the point here
        try:
            sched = build_scheduler(scheduler["fn"], opt, scheduler["interval"], steps=100, epochs=10)
            opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": 0.01})
            for _ in range(2):
                sched.step(1.0) if isinstance(sched, ReduceLROnPlateau) else sched.step()
        except Exception as err:
            raise ConfigError(
                f"model.finetune=staged adds the backbone's parameter group during training, which this scheduler "
                f"cannot take ({type(err).__name__}: {err}); use scheduler=cosine, warmup_cosine, step, multistep, "
                "exponential, plateau or none"
            ) from None


def finetune_callbacks(
    model: nn.Module, backbone_lr_scale: float, scheduler: dict[str, Any] | None
) -> list[L.Callback]:
    """The callbacks model=transfer's strategy needs (staged: StagedUnfreezing). The rules between the LR scale,
    L-BFGS, the unfreezing epoch and the run length are the rule book's (``ablate.config.rules.cross``); what is left
    here needs a built scheduler."""
    if not isinstance(model, TransferNet) or model.finetune != "staged":
        return []
    _check_scheduler_takes_new_groups(scheduler)
    ratio = backbone_lr_scale if backbone_lr_scale != 1.0 else 0.1
    return [StagedUnfreezing(model.unfreeze_at_epoch, ratio)]
