"""A checked config -> the Recipe: every object one training run is made of, built once, in a fixed order.

The order is part of the behaviour: the seeded global RNG is drawn by the model's initialisation, the DropConnect
swap and the augmentation's setup, so the same config gives the same numbers only if they are built in this order.
The config is only read: what building learns (the architecture of model.init_from's run) goes into ``run_config``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from ablate.build.data import build_datamodule
from ablate.build.lightning_module import training_module
from ablate.build.model import build_model
from ablate.build.objects import build_object
from ablate.build.optimizer_plan import build_optimization
from ablate.build.trainer import build_loggers, config_callbacks, trainer_args
from ablate.config.rules import effective_seed
from ablate.config.schema import AugmentConfig, InitConfig, RegConfig, typed
from ablate.data.augment import build_augment
from ablate.training.checkpoint_io import tests_best_weights
from ablate.training.ensembles import build_callbacks as build_ensemble_callbacks
from ablate.training.module import ClassifierModule


@dataclass(frozen=True)
class Recipe:
    """What ``Trainer.fit`` and ``Trainer.test`` are given, and what the run records about it."""

    seed: int  # what numpy / torch / random received (any integer is a seed)
    datamodule: Any  # a LightningDataModule of ablate.data, loaded and split
    model: torch.nn.Module
    module: ClassifierModule
    callbacks: tuple[L.Callback, ...]  # the config's (checkpointing, LR monitor, progress bar), then early stopping
    finetuning: tuple[L.Callback, ...]  # model=transfer's staged unfreezing
    ensembles: tuple[L.Callback, ...]  # the in-run ensemble or average of cfg.ensemble (scored after fit)
    loggers: tuple[Any, ...]
    trainer_args: Mapping[str, Any]  # the trainer node, resolved (``_target_`` included)
    run_config: Mapping[str, Any]  # the resolved config every checkpoint and logger carries
    warnings: tuple[str, ...]  # found while building (the run's length); the rule book's come from the check
    test_best: bool  # test the best-validation checkpoint (test_weights=best, or early stopping), else the last weights

    def trainer(
        self, recorders: Sequence[L.Callback] = (), extra: Sequence[L.Callback] = (), **objects: Any
    ) -> L.Trainer:
        """The Trainer: callbacks in a fixed order (the config's, ``recorders``, fine-tuning, ensembles, ``extra``);
        ``objects``: trainer arguments that are objects (plugins, a profiler), which a config cannot hold."""
        callbacks = [*self.callbacks, *recorders, *self.finetuning, *self.ensembles, *extra]
        logger = list(self.loggers) or False
        return build_object(dict(self.trainer_args), "trainer", callbacks=callbacks, logger=logger, **objects)


def build(cfg: DictConfig, quiet: bool = False) -> Recipe:
    """Build a run from a checked config (``ablate.config.rules.check``). Seeds the global RNG first.

    ``quiet`` (a multirun job): no progress bar or model summary. Raises ConfigError for what only the built objects
    can tell (run length, optimizer arguments, a staged unfreezing the scheduler cannot take, split sizes).
    """
    reg, aug, init = typed(cfg.reg, RegConfig), typed(cfg.aug, AugmentConfig), typed(cfg.init, InitConfig)
    ensembles = build_ensemble_callbacks(cfg)  # [] for ensemble=none: nothing runs per step
    torch.set_flush_denormal(bool(cfg.get("flush_denormal", False)))  # process-wide; no effect on GPU arithmetic
    seed = effective_seed(cfg.seed)
    L.seed_everything(seed, workers=True, verbose=False)

    datamodule = build_datamodule(cfg)
    built = build_model(cfg, datamodule, reg, init)
    model = built.model
    if reg.input_noise:  # one technique, two names: the rule book refuses both on at once
        aug.noise_std = reg.input_noise
    augment = build_augment(vars(aug), datamodule.num_classes, datamodule.input_shape[1:])
    optimization = build_optimization(cfg, model, len(datamodule.train_dataloader()))
    run_config = OmegaConf.to_container(cfg, resolve=True)
    if built.backbone_args:  # read from model.init_from's run: recorded, so the checkpoint alone rebuilds this model
        run_config["model"]["backbone_args"] = built.backbone_args
    module = training_module(cfg, model, datamodule, reg, seed, optimization, augment, run_config)
    has_val = len(datamodule.y_val) > 0  # a val/ monitor without a split: refused by the rule book (cross.py)
    loggers = build_loggers(cfg)
    return Recipe(
        seed=seed,
        datamodule=datamodule,
        model=model,
        module=module,
        callbacks=tuple(config_callbacks(cfg, has_val, quiet)),  # made after the loggers, as they always were
        finetuning=optimization.finetuning,
        ensembles=tuple(ensembles),
        loggers=tuple(loggers),
        trainer_args=trainer_args(cfg, quiet),
        run_config=run_config,
        warnings=optimization.warnings,
        test_best=tests_best_weights(cfg.get("test_weights", "best"), reg.early_stopping_patience, has_val),
    )
