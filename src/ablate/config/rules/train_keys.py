"""The rules of train.py's keys: the data, model, optimizer, scheduler, trainer, callbacks and ensemble groups and
the run keys of configs/train.yaml. Key (exact, or an fnmatch pattern) -> :class:`Rule`; the first match wins; keys
absent from the config are not checked, and keys without a rule are left to the code that consumes them (torch's and
Lightning's own argument checks run in ``ablate.build.object_checks.check_optimization`` before training). The typed
``reg`` / ``aug`` nodes have their rules in ``typed_nodes``."""

from __future__ import annotations

from fnmatch import fnmatchcase

from ablate.config.rules.core import Rule, choice, flag, fraction, integer, number, positive

SEED_MODULUS = 2**32  # numpy / Lightning / scikit-learn seeds live in [0, 2**32)
# What the module logs per epoch and a scheduler or callback may monitor; extend it with any new logged metric.
METRICS = ("val/loss", "val/acc", "train/loss", "train/acc")
MONITORABLE = (*METRICS, "val/acc_best", "val/loss_best")
LBFGS = "torch.optim.LBFGS"
LBFGS_TARGETS = (LBFGS, "torch.optim.lbfgs.LBFGS")  # both dotted paths build torch's L-BFGS
# model=transfer's class; both dotted paths build it (configs/model/transfer.yaml names the first)
TRANSFER = ("ablate.models.TransferNet", "ablate.models.transfer.TransferNet")
PLATEAU = "torch.optim.lr_scheduler.ReduceLROnPlateau"

# Key (exact, or an fnmatch pattern) -> rule. The first match wins; keys absent from the config are not checked.
RULES: dict[str, Rule] = {
    # run keys (configs/train.yaml)
    "seed": integer(1),  # any integer: folded into [0, 2**32) by effective_seed
    "test": flag(),
    "test_weights": choice("best", "last"),
    "decay_bias_and_norm": flag(False),
    "nan_check_every": integer(25, low=1),
    "channels_last": flag(),
    "flush_denormal": flag(),
    "ckpt_path": Rule(str, "logs/runs/<run>/checkpoints/last.ckpt", nullable=True),
    # data
    "data.batch_size": integer(128, low=1),
    "data.eval_batch_size": integer(1000, low=1),
    "data.val_size": number(0.1, low=0, why="a fraction in [0, 1) or a sample count"),  # see _check_val_size
    "data.num_folds": integer(5, low=2, extra=(0,)),
    "data.fold": integer(0, low=0),
    "data.split_seed": integer(0),
    "data.train_subset": integer(1000, low=0),
    "data.bootstrap_seed": integer(0, low=0, nullable=True),
    "data.download": flag(),
    "data.pad": integer(4, low=0, why="pixels of zeros on every side"),
    "data.root": Rule(str, "path/to/images"),  # data=imagefolder: <root>/<class>/<image>
    "data.name": Rule(str, "fashion_mnist"),
    "data.data_dir": Rule(str, "data"),
    "data.synthetic.num_train": integer(1200, low=1),
    "data.synthetic.num_test": integer(400, low=1),
    "data.synthetic.num_classes": integer(10, low=2, why="a classifier needs two classes or more"),
    "data.synthetic.channels": integer(1, low=1),
    "data.synthetic.size": integer(28, low=4),
    "data.synthetic.noise": number(0.35, low=0),
    "data.synthetic.seed": integer(1234),
    # model
    "model.depth": integer(2, low=1),
    "model.width": integer(256, low=1),
    "model.hidden": integer(256, low=1),
    "model.channels": Rule(list, "[32,64]", item=integer(32, low=1)),
    "model.kernel_sizes": Rule(list, "[5,3]", item=integer(3, low=1)),
    "model.dropout": fraction(0.5),
    "model.input_dropout": fraction(0.2),
    "model.spatial_dropout": fraction(0.1),
    "model.stochastic_depth": fraction(0.5, low_open=True, high_open=False),
    "model.stochastic_depth_mode": choice("row", "batch"),
    "model.widths": Rule(list, "[1024,1024,2048]", item=integer(1024, low=1), nullable=True),
    "model.fmp_ratio": number(1.41, low=1, high=2, low_open=True, high_open=True),
    "model.fmp_mode": choice("random", "pseudorandom"),
    "model.fmp_overlapping": flag(),
    "model.activation": choice("relu", "leaky_relu", "elu", "tanh", "sigmoid", "maxout"),
    "model.batchnorm": flag(),
    "model.downsample": choice("stride", "maxpool", "fmp"),
    # model=transfer (src/ablate/models/transfer.py; the range of unfreeze_last depends on the backbone)
    "model.finetune": choice("full", "head", "last_n", "staged"),
    "model.unfreeze_last": integer(2, low=1, why="how many of the backbone's last blocks train"),
    "model.unfreeze_at_epoch": integer(1, low=1),
    "model.resize_to": integer(224, low=1, nullable=True, why="the side every batch is upsampled to"),
    "model.pretrained": flag(False),
    "model.keep_head": flag(False),
    # optimizer
    "optimizer.lr": positive(0.01),
    "optimizer.momentum": fraction(0.9, why="momentum >= 1 never forgets a gradient and diverges"),
    "optimizer.dampening": fraction(0.0, high_open=False),
    "optimizer.weight_decay": number(0.0005, low=0),
    "optimizer.betas": Rule(list, "[0.9,0.999]", item=fraction(0.9), length=2),
    "optimizer.eps": positive(1e-8),
    "optimizer.rho": fraction(0.9, high_open=False),
    "optimizer.alpha": fraction(0.99, high_open=False),
    "optimizer.nesterov": flag(),
    "optimizer.max_iter": integer(5, low=1),
    "optimizer.history_size": integer(10, low=1),
    "optimizer.line_search_fn": choice("strong_wolfe", nullable=True),
    "optimizer.backbone_lr_scale": positive(0.1, why="the backbone's LR is lr x backbone_lr_scale"),
    # scheduler
    "scheduler.interval": choice("step", "epoch"),
    "scheduler.monitor": choice(*METRICS, nullable=True),
    "scheduler.fn.gamma": positive(0.1, why="the LR is multiplied by gamma"),
    "scheduler.fn.factor": fraction(0.1, low_open=True, why="the LR is multiplied by factor"),
    "scheduler.fn.step_size": integer(2, low=1),
    "scheduler.fn.milestones": Rule(list, "[3,5]", item=integer(3, low=1)),
    "scheduler.fn.fractions": Rule(list, "[0.5,0.75]", item=fraction(0.5, low_open=True)),
    "scheduler.fn.patience": integer(2, low=0),
    # plateau: null = the monitor's direction (ablate.config.metric_registry)
    "scheduler.fn.mode": choice("min", "max", "triangular", "triangular2", "exp_range", nullable=True),
    "scheduler.fn.eta_min": number(0.0, low=0),
    "scheduler.fn.base_lr": number(0.0001, low=0),
    "scheduler.fn.max_lr": positive(0.1),
    "scheduler.fn.step_size_up": integer(800, low=1),
    "scheduler.fn.pct_start": fraction(0.25, low_open=True),
    "scheduler.fn.cycles": integer(3, low=1),
    "scheduler.fn.warmup_fraction": fraction(0.05),
    "scheduler.fn.start_factor": fraction(0.01, low_open=True, high_open=False),
    "scheduler.fn.cycle_momentum": flag(False),
    # trainer (Lightning's names)
    "trainer.max_epochs": integer(6, low=1),
    "trainer.min_epochs": integer(1, low=0, nullable=True),
    "trainer.max_steps": integer(1000, low=1, extra=(-1,)),
    "trainer.gradient_clip_val": number(1.0, low=0, nullable=True),
    "trainer.gradient_clip_algorithm": choice("norm", "value"),
    "trainer.accumulate_grad_batches": integer(2, low=1),
    "trainer.check_val_every_n_epoch": integer(1, low=1, nullable=True),
    "trainer.num_sanity_val_steps": integer(2, low=0, extra=(-1,)),
    "trainer.log_every_n_steps": integer(50, low=1),
    "trainer.limit_train_batches": positive(0.5, nullable=True),  # a fraction (float) or a batch count (int)
    "trainer.limit_*_batches": number(0.5, low=0, nullable=True),  # 0 turns validation / test off
    "trainer.enable_*": flag(),
    "trainer.sync_batchnorm": flag(),
    "trainer.use_distributed_sampler": flag(False),
    "trainer.accelerator": Rule(str, "cpu"),
    # callbacks
    # callbacks (Lightning's names; other callbacks' keys are checked by their constructors)
    "callbacks.early_stopping.monitor": choice(*MONITORABLE),
    "callbacks.model_checkpoint.monitor": choice(*MONITORABLE, nullable=True),
    # null: the monitor's direction (ablate.config.metric_registry), filled in by _derive_modes
    "callbacks.early_stopping.mode": choice("min", "max", nullable=True),
    "callbacks.model_checkpoint.mode": choice("min", "max", nullable=True),
    "callbacks.early_stopping.patience": integer(3, low=0),
    "callbacks.early_stopping.min_delta": number(0.0, low=0),
    "callbacks.model_checkpoint.save_top_k": integer(1, low=0, extra=(-1,)),
    "callbacks.model_checkpoint.save_last": flag(),
    "callbacks.progress_bar.refresh_rate": integer(25, low=0),
    # ensemble (configs/ensemble/*; ensemble.members: _check_ensemble_members)
    "ensemble.name": choice("none", "snapshot", "nocycle", "ema", "swa"),
    "ensemble.cycles": integer(5, low=1),
    "ensemble.decay": fraction(0.999, why="decay 1 never moves the average off the initial weights"),
    "ensemble.warmup": flag(),
    "ensemble.every_n_steps": integer(1, low=1),
    "ensemble.start_step": integer(0, low=0),
    "ensemble.swa_start": number(0.75, low=0, why="a fraction of the epochs in (0, 1) or the first averaged epoch"),
    "ensemble.swa_lr": positive(0.05, nullable=True, why="null = half the optimizer's LR"),
}


def rule_for(key: str) -> Rule | None:
    if key in RULES:
        return RULES[key]
    return next((rule for pattern, rule in RULES.items() if fnmatchcase(key, pattern)), None)


def effective_seed(seed: int) -> int:
    """Any integer is a seed (README): fold it into the range numpy, Lightning and scikit-learn accept.
    Seeds that differ by a multiple of 2**32 (e.g. -1 and 4294967295) therefore give the same run."""
    return int(seed) % SEED_MODULUS
