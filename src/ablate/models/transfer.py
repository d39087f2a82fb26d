"""Transfer learning: a backbone (torchvision's by name, or one of this project's models) with a new head.

Weights come from torchvision's pretrained weights (``pretrained=True``: the torch hub cache under TORCH_HOME, else a
download) and/or from one of this project's runs (``model.init_from``: the build stage reads the run's checkpoint, see
:mod:`ablate.build.init_from`, and hands its tensors to ``TransferNet.load_run_weights``). Which parameters train is
``finetune`` (see :mod:`ablate.build.finetune`): ``full``, ``head``, ``last_n`` (with ``unfreeze_last``) or ``staged``.

- Input channels: the backbone's stem (its first Conv2d) is rebuilt for the data's channels; loaded stem weights are
  adapted (1 channel: summed over RGB, which equals feeding the grey image repeated on 3 channels but costs a third;
  C channels: RGB tiled and scaled by 3/C). This keeps a 1-channel Fashion-MNIST batch at 1 channel.
- Small images: the backbone runs at the data's size; ``resize_to`` upsamples every batch inside ``forward``
  (bilinear) for backbones that need larger inputs or were pretrained at a larger scale. A backbone that cannot take
  the size is a ConfigError at construction (one probe forward).
- Head: the backbone's last ``nn.Linear`` is replaced by ``nn.Identity``; ``head`` is a new Linear for num_classes.

Building backbones: :mod:`ablate.models.backbones`. This module reads no files of its own: a library below every stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ablate.errors import ConfigError, require_probability
from ablate.layers.kinds import BATCH_NORMS
from ablate.models.backbones import adapt_input_conv, build_backbone, first_conv, replace_last_linear

FINETUNE = ("full", "head", "last_n", "staged")


class TransferNet(nn.Module):
    """``head(dropout(backbone(resize(x))))``; ``backbone`` and ``head`` are what the fine-tuning strategies use."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        backbone: str = "resnet18",
        backbone_args: Mapping[str, Any] | None = None,
        pretrained: bool = False,
        finetune: str = "full",
        unfreeze_last: int = 1,
        unfreeze_at_epoch: int = 1,
        resize_to: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if finetune not in FINETUNE:
            raise ConfigError(f"model.finetune must be one of {list(FINETUNE)}, got {finetune!r}")
        require_probability("model.dropout", dropout)
        if resize_to is not None and resize_to < 1:
            raise ConfigError(f"model.resize_to must be a positive image size or null, got {resize_to}")
        self.finetune, self.unfreeze_last, self.unfreeze_at_epoch = finetune, unfreeze_last, unfreeze_at_epoch
        self.resize_to = resize_to
        self.loaded_weights = pretrained  # True also once load_run_weights has run (init= then spares the backbone)
        args = dict(backbone_args or {})
        self.backbone_args = args  # what was built
        net = build_backbone(backbone, args, input_shape, num_classes, pretrained)
        self.head_source_name, in_features = replace_last_linear(net, backbone)
        self.backbone = net
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(in_features, num_classes)
        self._probe(input_shape, backbone)
        self.init_report: dict[str, Any] = {}
        self.apply_finetune()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize_to is not None and x.shape[-1] != self.resize_to:
            x = F.interpolate(x, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
        return self.head(self.dropout(self.backbone(x)))

    def load_run_weights(self, source: Mapping[str, torch.Tensor], origin: str, keep_head: bool = False) -> None:
        """Load every backbone tensor of a run's model (``source``: its state dict without the ClassifierModule
        prefix). All must be there, with equal shapes; the stem may differ in input channels and is adapted. The head
        is new unless ``keep_head`` and its shape matches (same class count). What was loaded: ``init_report``."""
        mapped = {_source_key(k, self.head_source_name): v for k, v in source.items()}
        target = self.state_dict()
        stem = first_conv(self.backbone)
        stem_key = f"backbone.{stem[0]}.weight" if stem else None
        missing, mismatched, load = [], [], {}
        for key, tensor in target.items():
            if key.startswith(("head.", "dropout.")):
                continue
            if key not in mapped:
                missing.append(key)
            elif mapped[key].shape == tensor.shape:
                load[key] = mapped[key]
            elif key == stem_key and _same_but_channels(mapped[key], tensor):
                load[key] = adapt_input_conv(mapped[key], tensor.shape[1])
            else:
                mismatched.append(f"{key}: checkpoint {list(mapped[key].shape)} vs model {list(tensor.shape)}")
        if missing or mismatched:
            problems = [f"missing {k}" for k in missing[:3]] + mismatched[:3]
            raise ConfigError(
                f"model.init_from={origin}: {len(missing)} backbone tensors missing and {len(mismatched)} of another "
                f"shape ({'; '.join(problems)}); build the checkpoint's architecture (model.backbone, "
                "model.backbone_args)"
            )
        head = self.head.state_dict(prefix="head.")
        head_loaded = keep_head and all(k in mapped and mapped[k].shape == v.shape for k, v in head.items())
        if head_loaded:
            load.update({k: mapped[k] for k in head})
        self.load_state_dict(load, strict=False)
        self.loaded_weights = True
        self.init_report = {"init_from": origin, "tensors_loaded": len(load)}
        self.init_report["head"] = "loaded" if head_loaded else "reinitialized"

    def train(self, mode: bool = True) -> TransferNet:
        # Frozen BatchNorm layers stay in eval mode (running statistics neither used from the batch nor updated),
        # however often Lightning or anything else switches the model to training mode.
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, BATCH_NORMS) and is_frozen(module):
                    module.eval()
        return self

    def blocks(self) -> list[nn.Module]:
        """The backbone's blocks in forward order (what ``unfreeze_last`` counts): nn.Sequential/ModuleList
        containers are opened, every other module with parameters is one block, and a normalization layer joins
        the block before it (resnet18: stem conv+bn, then its 8 residual blocks; mobilenet_v3_small: 13 feature
        blocks and the pre-logits Linear; convnet: its conv blocks and its hidden Linear)."""
        groups: list[list[nn.Module]] = []

        def visit(module: nn.Module) -> None:
            for child in module.children():
                if isinstance(child, nn.Sequential | nn.ModuleList):  # also Conv2dNormActivation: same block
                    visit(child)
                elif list(child.parameters()):
                    if isinstance(child, NORMS) and groups:
                        groups[-1].append(child)
                    else:
                        groups.append([child])

        visit(self.backbone)
        return [nn.ModuleList(g) if len(g) > 1 else g[0] for g in groups]

    def apply_finetune(self) -> None:
        """Freeze what the strategy keeps fixed (staged starts like ``head``; its callback unfreezes later)."""
        if self.finetune == "full":
            return
        trainable: list[nn.Module] = []
        if self.finetune == "last_n":
            blocks = self.blocks()
            if not 1 <= self.unfreeze_last < len(blocks):
                raise ConfigError(
                    f"model.unfreeze_last must be in [1, {len(blocks) - 1}] for this backbone ({len(blocks)} "
                    f"blocks), got {self.unfreeze_last}; finetune=full trains them all, finetune=head none"
                )
            trainable = blocks[-self.unfreeze_last :]
        freeze(self.backbone)
        for block in trainable:
            for p in block.parameters():
                p.requires_grad_(True)
        self.train(self.training)

    def transfer_summary(self) -> dict[str, Any]:
        """For results.json: where the weights came from and what trains."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {
            "finetune": self.finetune,
            "backbone_blocks": len(self.blocks()),
            "trainable_params_at_start": trainable,
            **self.init_report,
        }

    def fresh_modules(self) -> list[nn.Module]:
        """What ``init=...`` may re-initialize: only the new head when weights were loaded, else everything."""
        return [self.head] if self.loaded_weights else [self]

    def _probe(self, input_shape: tuple[int, int, int], backbone: str) -> None:
        size = f"{self.resize_to}x{self.resize_to}" if self.resize_to else "x".join(map(str, input_shape[1:]))
        mode = self.training
        try:
            with torch.no_grad():
                self.eval()(torch.zeros(1, *input_shape))
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[-1]
            raise ConfigError(
                f"backbone {backbone} cannot run on {size} inputs ({reason}); set model.resize_to to a larger size"
            ) from None
        finally:
            self.train(mode)


NORMS = (*BATCH_NORMS, nn.GroupNorm, nn.LayerNorm)


def _same_but_channels(loaded: torch.Tensor, target: torch.Tensor) -> bool:
    """A stem conv's weight that differs only in input channels (adapted, see ``adapt_input_conv``)."""
    return loaded.shape[0] == target.shape[0] and loaded.shape[2:] == target.shape[2:]


def _source_key(key: str, head_source_name: str) -> str:
    """A source state-dict key (ClassifierModule prefix removed) as a key of TransferNet."""
    if key.startswith(("backbone.", "head.")):  # a TransferNet run
        return key
    if key.startswith(head_source_name + "."):  # a plain model's classifier is our head
        return "head." + key[len(head_source_name) + 1 :]
    return "backbone." + key


def freeze(module: nn.Module) -> None:
    """No gradients for ``module``'s parameters; its BatchNorm layers then stay in eval mode (TransferNet.train)."""
    for p in module.parameters():
        p.requires_grad_(False)


def is_frozen(module: nn.Module) -> bool:
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)
