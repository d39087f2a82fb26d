"""Transfer learning: a backbone (torchvision's by name, or one of this project's models) with a new head.

Weights come from torchvision's pretrained weights (``pretrained=True``: the torch hub cache under TORCH_HOME, else a
download) and/or from one of this project's runs (``init_from``: a run dir or a checkpoint). Which parameters train is
``finetune`` (see :mod:`ablate.finetune`): ``full``, ``head``, ``last_n`` (with ``unfreeze_last``) or ``staged``.

- Input channels: the backbone's stem (its first Conv2d) is rebuilt for the data's channels; loaded stem weights are
  adapted (1 channel: summed over RGB, which equals feeding the grey image repeated on 3 channels but costs a third;
  C channels: RGB tiled and scaled by 3/C). This keeps a 1-channel Fashion-MNIST batch at 1 channel.
- Small images: the backbone runs at the data's size; ``resize_to`` upsamples every batch inside ``forward``
  (bilinear) for backbones that need larger inputs or were pretrained at a larger scale. A backbone that cannot take
  the size is a ConfigError at construction (one probe forward).
- Head: the backbone's last ``nn.Linear`` is replaced by ``nn.Identity``; ``head`` is a new Linear for num_classes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import get_class
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ablate.errors import ConfigError, require_probability

# This project's models usable as backbones (their own kwargs go in ``backbone_args``).
PROJECT_BACKBONES = {
    "mlp": "ablate.models.MLP",
    "convnet": "ablate.models.ConvNet",
    "resnet": "ablate.models.ResNet",
    "fmpnet": "ablate.models.FMPNet",
}
FINETUNE = ("full", "head", "last_n", "staged")
# Keys of model=transfer that are not architecture (skipped when a source run's config is reused).
_TRANSFER_KEYS = ("_target_", "pretrained", "init_from", "keep_head", "finetune", "unfreeze_last", "unfreeze_at_epoch")


class TransferNet(nn.Module):
    """``head(dropout(backbone(resize(x))))``; ``backbone`` and ``head`` are what the fine-tuning strategies use."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        backbone: str = "resnet18",
        backbone_args: Mapping[str, Any] | None = None,
        pretrained: bool = False,
        init_from: str | None = None,
        keep_head: bool = False,
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
        self.loaded_weights = bool(pretrained or init_from)
        source = load_checkpoint(init_from) if init_from else None
        args = dict(backbone_args or {})
        if backbone in PROJECT_BACKBONES and not args and source is not None:
            args = source_architecture(source["ablate_config"], backbone)  # "fine-tune the model of that run"
        net = build_backbone(backbone, args, input_shape, num_classes, pretrained)
        self.head_source_name, in_features = _replace_last_linear(net, backbone)
        self.backbone = net
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(in_features, num_classes)
        self._probe(input_shape, backbone)
        self.init_report: dict[str, Any] = {}
        if source is not None:
            self.init_report = load_matching(self, source["state_dict"], str(init_from), keep_head)
        self.apply_finetune()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize_to is not None and x.shape[-1] != self.resize_to:
            x = F.interpolate(x, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
        return self.head(self.dropout(self.backbone(x)))

    def train(self, mode: bool = True) -> TransferNet:
        # Frozen BatchNorm layers stay in eval mode (running statistics neither used from the batch nor updated),
        # however often Lightning or anything else switches the model to training mode.
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, _BatchNorm) and is_frozen(module):
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


NORMS = (_BatchNorm, nn.GroupNorm, nn.LayerNorm)


def freeze(module: nn.Module) -> None:
    """No gradients for ``module``'s parameters; its BatchNorm layers then stay in eval mode (TransferNet.train)."""
    for p in module.parameters():
        p.requires_grad_(False)


def is_frozen(module: nn.Module) -> bool:
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)


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


def _first_conv(net: nn.Module) -> tuple[str, nn.Conv2d] | None:
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
    found = _first_conv(net)
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


def _replace_last_linear(net: nn.Module, backbone: str) -> tuple[str, int]:
    """Replace the backbone's classifier (its last nn.Linear) with Identity; return its name and input width."""
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"backbone {backbone} has no nn.Linear classifier to replace; pick another backbone")
    name, linear = linears[-1]
    net.set_submodule(name, nn.Identity())
    return name, linear.in_features


# -- weights from this project's runs ----------------------------------------------------------------------------
def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run dir's best checkpoint (results.json's ``checkpoint_best``, else its last)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_dir():
        raise ConfigError(f"model.init_from={path} does not exist; pass a run dir or a .ckpt file")
    results = p / "results.json"
    if results.is_file():
        record = json.loads(results.read_text())
        for key in ("checkpoint_best", "checkpoint_last"):
            if record.get(key) and Path(record[key]).is_file():
                return Path(record[key])
    folder = p / "checkpoints"
    candidates = sorted(folder.glob("best*.ckpt")) + sorted(folder.glob("last*.ckpt")) if folder.is_dir() else []
    if not candidates:
        raise ConfigError(
            f"model.init_from={path} holds no checkpoint (no results.json checkpoint, no checkpoints/*.ckpt); "
            "pass one finished run's folder or a .ckpt file"
        )
    return candidates[0]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    file = resolve_checkpoint(path)
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(
            f"model.init_from: cannot read {file} ({type(err).__name__}: {err})".splitlines()[0]
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"model.init_from: {file} is not a Lightning checkpoint of this project (no state_dict)")
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    return {"state_dict": state, "ablate_config": ckpt.get("ablate_config") or {}, "path": str(file)}


def source_architecture(config: Mapping[str, Any], backbone: str) -> dict[str, Any]:
    """The kwargs of a source run's model when it is the same project model (plain or as a transfer backbone)."""
    model = dict(config.get("model") or {})
    if model.get("_target_") == PROJECT_BACKBONES[backbone]:
        return {k: v for k, v in model.items() if k not in _TRANSFER_KEYS}
    if model.get("_target_", "").endswith("TransferNet") and model.get("backbone") == backbone:
        return dict(model.get("backbone_args") or {})
    return {}


def _source_key(key: str, head_source_name: str) -> str:
    """A source state-dict key (ClassifierModule prefix removed) as a key of TransferNet."""
    if key.startswith(("backbone.", "head.")):  # a TransferNet run
        return key
    if key.startswith(head_source_name + "."):  # a plain model's classifier is our head
        return "head." + key[len(head_source_name) + 1 :]
    return "backbone." + key


def load_matching(
    model: TransferNet, source: Mapping[str, torch.Tensor], origin: str, keep_head: bool = False
) -> dict[str, Any]:
    """Load every backbone tensor from ``source`` (all must be there, with equal shapes; the stem may differ in
    input channels and is adapted). The head is new unless ``keep_head`` and its shape matches (same class count)."""
    mapped = {_source_key(k, model.head_source_name): v for k, v in source.items()}
    target = model.state_dict()
    stem = _first_conv(model.backbone)
    stem_key = f"backbone.{stem[0]}.weight" if stem else None
    missing, mismatched, load = [], [], {}
    for key, tensor in target.items():
        if key.startswith(("head.", "dropout.")):
            continue
        if key not in mapped:
            missing.append(key)
        elif mapped[key].shape == tensor.shape:
            load[key] = mapped[key]
        elif key == stem_key and mapped[key].shape[0] == tensor.shape[0] and mapped[key].shape[2:] == tensor.shape[2:]:
            load[key] = adapt_input_conv(mapped[key], tensor.shape[1])
        else:
            mismatched.append(f"{key}: checkpoint {list(mapped[key].shape)} vs model {list(tensor.shape)}")
    if missing or mismatched:
        problems = [f"missing {k}" for k in missing[:3]] + mismatched[:3]
        raise ConfigError(
            f"model.init_from={origin}: {len(missing)} backbone tensors missing and {len(mismatched)} of another "
            f"shape ({'; '.join(problems)}); build the checkpoint's architecture (model.backbone, model.backbone_args)"
        )
    head_loaded = keep_head and all(
        k in mapped and mapped[k].shape == v.shape for k, v in model.head.state_dict(prefix="head.").items()
    )
    if head_loaded:
        load.update({k: mapped[k] for k in model.head.state_dict(prefix="head.")})
    model.load_state_dict(load, strict=False)
    return {"init_from": origin, "tensors_loaded": len(load), "head": "loaded" if head_loaded else "reinitialized"}
