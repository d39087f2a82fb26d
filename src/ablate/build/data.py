"""The run's data module: instantiated from ``cfg.data``, seeded, loaded and split."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from ablate.build.objects import build_object
from ablate.config.rules import effective_seed


def build_datamodule(cfg: DictConfig) -> Any:
    """The run's data, loaded and split (training, and evaluate.py rebuilding a run from its checkpoint config)."""
    datamodule = build_object(cfg.data, "data")
    datamodule.shuffle_seed = effective_seed(cfg.seed)  # any integer is a seed (ablate.config.rules)
    datamodule.prepare()
    return datamodule
