"""The run's network: the model node instantiated with what the reg knobs ask of it, then initialised.

``model=transfer`` with ``model.init_from``: the source run is read here (``ablate.build.init_from``), its
architecture fills an empty ``model.backbone_args``, and its tensors are loaded into the fresh TransferNet. The config
is not changed: the architecture read from the source comes back as ``BuiltModel.backbone_args``, and the recipe
records it in the run config that checkpoints carry (so a checkpoint alone rebuilds the model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ablate.build.init_from import read_source, source_architecture
from ablate.build.objects import build_object
from ablate.config.schema import InitConfig, RegConfig
from ablate.models.backbones import PROJECT_BACKBONES
from ablate.models.init import apply_init
from ablate.training.regularization import apply_dropconnect, model_kwargs

# Keys of the model node that say where weights come from: read here, never passed to the model.
_SOURCE_KEYS = ("init_from", "keep_head")


@dataclass(frozen=True)
class BuiltModel:
    model: torch.nn.Module
    backbone_args: dict[str, Any] | None  # the architecture read from model.init_from's run, when the config had none


def build_model(
    cfg: DictConfig, datamodule: Any, reg: RegConfig, init_cfg: InitConfig, load_weights: bool = True
) -> BuiltModel:
    """The run's network with its reg-dependent layers (dropout rates, DropConnect, FMP), freshly initialised.

    ``load_weights=False`` (evaluate.py: the checkpoint holds every weight): no pretrained weights, no source run.
    """
    node = OmegaConf.to_container(cfg.model)  # a plain copy: what is passed on, never cfg itself
    init_from, keep_head = (node.pop(key, None) for key in _SOURCE_KEYS)
    if not load_weights and "pretrained" in node:
        node["pretrained"], init_from = False, None
    source = read_source(init_from) if init_from and load_weights else None
    read_args = None
    if source is not None and node.get("backbone") in PROJECT_BACKBONES and not node.get("backbone_args"):
        read_args = source_architecture(source.config, node["backbone"])  # "fine-tune the model of that run"
        node["backbone_args"] = read_args
    model = build_object(
        node,
        "model",
        input_shape=datamodule.input_shape,
        num_classes=datamodule.num_classes,
        **model_kwargs(cfg.model._target_, reg),
    )
    if source is not None:
        model.load_run_weights(source.state_dict, str(init_from), bool(keep_head))
    apply_init(model, init_cfg.scheme)
    apply_dropconnect(model, reg)
    return BuiltModel(model, read_args or None)
