"""model.init_from: the weights of one of this project's runs (a run dir or a Lightning checkpoint) for a TransferNet.

Reading the run is a build step, not the model's: the model library stays free of files and checkpoint formats, and
``TransferNet.load_run_weights`` only maps tensors. The checkpoint is verified (checksum, ``weights_only``) by the same
reader as every other checkpoint of this project.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ablate.errors import ConfigError
from ablate.models.backbones import PROJECT_BACKBONES
from ablate.training.checkpoint_io import CheckpointError, load_verified

# Keys of model=transfer that are not architecture (skipped when a source run's config is reused).
_TRANSFER_KEYS = ("_target_", "pretrained", "init_from", "keep_head", "finetune", "unfreeze_last", "unfreeze_at_epoch")


@dataclass(frozen=True)
class SourceRun:
    """A run's model weights (ClassifierModule prefix removed), the config it was trained with, and the file read."""

    state_dict: Mapping[str, torch.Tensor]
    config: Mapping[str, Any]
    path: str


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


def read_source(path: str | Path) -> SourceRun:
    """The run's model weights and config, from a verified checkpoint (one-line errors)."""
    file = resolve_checkpoint(path)
    try:
        ckpt = load_verified(file)  # the checksum check and one-line errors every reader of our checkpoints gets
    except CheckpointError as err:
        raise ConfigError(f"model.init_from: {err}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"model.init_from: {file} is not a Lightning checkpoint of this project (no state_dict)")
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    return SourceRun(state, ckpt.get("ablate_config") or {}, str(file))


def source_architecture(config: Mapping[str, Any], backbone: str) -> dict[str, Any]:
    """The kwargs of a source run's model when it is the same project model (plain or as a transfer backbone)."""
    model = dict(config.get("model") or {})
    if model.get("_target_") == PROJECT_BACKBONES[backbone]:
        return {k: v for k, v in model.items() if k not in _TRANSFER_KEYS}
    if model.get("_target_", "").endswith("TransferNet") and model.get("backbone") == backbone:
        return dict(model.get("backbone_args") or {})
    return {}
