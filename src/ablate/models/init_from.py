"""model.init_from: a TransferNet's weights from one of this project's runs (a run dir or a Lightning checkpoint)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ablate.errors import ConfigError
from ablate.models.backbones import PROJECT_BACKBONES, adapt_input_conv, first_conv
from ablate.runtime.checkpoint_io import CheckpointError, load_verified

if TYPE_CHECKING:
    from ablate.models.transfer import TransferNet

# Keys of model=transfer that are not architecture (skipped when a source run's config is reused).
_TRANSFER_KEYS = ("_target_", "pretrained", "init_from", "keep_head", "finetune", "unfreeze_last", "unfreeze_at_epoch")


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
        ckpt = load_verified(file)  # the checksum check and one-line errors every reader of our checkpoints gets
    except CheckpointError as err:
        raise ConfigError(f"model.init_from: {err}") from None
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
    stem = first_conv(model.backbone)
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
