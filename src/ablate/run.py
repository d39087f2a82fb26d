"""The training job: config -> data, model, module, trainer -> fit, test -> results.json.

``train(cfg)`` raises; ``main(cfg)`` (called by train.py) turns user errors into one-line messages and exit codes.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import DictConfig, OmegaConf

from ablate.cli import hydra_overrides
from ablate.config_checks import check_optimization, is_lbfgs, optimizer_stepping
from ablate.data.augment import build_augment
from ablate.errors import AblateError, ConfigError, DivergedError
from ablate.history import History
from ablate.models.init import apply_init
from ablate.module import ClassifierModule
from ablate.profiling import NullProfiler
from ablate.regularization import StepRegularizers, apply_dropconnect, check_reg, model_kwargs
from ablate.results import RunRecord
from ablate.schema import AugmentConfig, InitConfig, RegConfig
from ablate.validate import effective_seed, validate


def _instantiate(node: DictConfig, what: str, **kwargs: Any) -> Any:
    try:
        # _convert_="all": plain lists/dicts, so no OmegaConf object reaches an optimizer state or checkpoint.
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, AblateError):
            raise cause from None
        lines = [line.strip() for line in str(cause).splitlines() if not line.strip().startswith("full_key:")]
        message = " ".join(line for line in lines if line) or type(cause).__name__
        raise ConfigError(f"cannot build {what}: {message}; check `{what}` (python train.py --help)") from err


def _build_callbacks(cfg: DictConfig, has_val: bool) -> list[L.Callback]:
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if name == "model_checkpoint" and not has_val:
            node = OmegaConf.merge(node, {"monitor": None, "filename": "epoch{epoch:03d}"})
        if name == "model_checkpoint" and cfg.get("ckpt_path") is not None and cfg.ckpt_path:
            # A resumed run keeps checkpointing into the original folder: Lightning restores the best-k
            # bookkeeping only when the folder is the same, so "best" keeps meaning best over the whole run.
            node = OmegaConf.merge(node, {"dirpath": str(Path(cfg.ckpt_path).resolve().parent)})
        callbacks.append(_instantiate(node, f"callbacks.{name}"))
    patience = cfg.reg.early_stopping_patience
    if patience:
        if not has_val:
            raise ConfigError("reg.early_stopping needs a validation split; set data.val_size > 0")
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=patience))
    callbacks.append(History(Path(cfg.paths.output_dir) / "history.csv"))  # per-epoch table for plots
    return callbacks


def _typed(node: DictConfig, schema: type) -> Any:
    """The plain dataclass behind a typed node (the node is already validated by OmegaConf)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))


def _use_plain_cuda_probe() -> None:
    """Undo Lightning's ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` for a CPU run.

    Lightning sets it at import so that ``torch.cuda.is_available()`` cannot poison a later fork. On a CUDA build of
    torch without a driver, that check dlopens NVML on every call, and Adam/AdamW call it on every step (~0.1 ms,
    1-2% of a small model's step). A CPU run never initialises CUDA, so the plain check is safe here.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1":
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def _final_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if v.numel() == 1}


def build_datamodule(cfg: DictConfig) -> Any:
    """The run's data, loaded and split (also used by evaluate.py to rebuild a run from its checkpoint config)."""
    datamodule = _instantiate(cfg.data, "data")
    datamodule.shuffle_seed = effective_seed(cfg.seed)  # any integer is a seed (ablate.validate)
    datamodule.prepare()
    return datamodule


def build_model(cfg: DictConfig, datamodule: Any, reg: RegConfig, init_cfg: InitConfig) -> torch.nn.Module:
    """The run's network with its reg-dependent layers (dropout rates, DropConnect, FMP), freshly initialised."""
    model = _instantiate(
        cfg.model,
        "model",
        input_shape=datamodule.input_shape,
        num_classes=datamodule.num_classes,
        **model_kwargs(cfg.model._target_, reg, cfg.model),
    )
    apply_init(model, init_cfg.scheme)
    apply_dropconnect(model, reg)
    return model


# Lightning warnings that do not apply to in-memory loaders and per-batch normalization in the module.
for _pattern in (".*overridden `on_after_batch_transfer`.*", ".*does not have many workers.*"):
    warnings.filterwarnings("ignore", message=_pattern)


def train(
    cfg: DictConfig, record: RunRecord | None = None, extra_callbacks: Sequence[L.Callback] = ()
) -> dict[str, Any]:
    """Train (and test) one configuration. Raises AblateError subclasses for anything the user can fix."""
    config_warnings = validate(cfg)  # train.py ran it before importing torch; this covers direct callers
    seed = effective_seed(cfg.seed)
    if record is not None and config_warnings:
        record.update(warnings=config_warnings)
    if record is not None and seed != cfg.seed:
        record.update(effective_seed=seed)  # any integer is a seed; this one is what numpy/torch received
    reg, aug_cfg, init_cfg = _typed(cfg.reg, RegConfig), _typed(cfg.aug, AugmentConfig), _typed(cfg.init, InitConfig)
    check_reg(reg)
    torch.set_flush_denormal(bool(cfg.get("flush_denormal", False)))  # process-wide; no effect on GPU arithmetic
    L.seed_everything(seed, workers=True, verbose=False)

    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule, reg, init_cfg)
    if reg.input_noise:
        if aug_cfg.noise_std:
            raise ConfigError("reg.input_noise and aug.noise_std are the same technique; set only one")
        aug_cfg.noise_std = reg.input_noise
    augment = build_augment(vars(aug_cfg), datamodule.num_classes, datamodule.input_shape[1:])
    scheduler = None
    if cfg.get("scheduler"):
        scheduler = {
            "fn": _instantiate(cfg.scheduler.fn, "scheduler.fn"),
            "interval": cfg.scheduler.get("interval", "epoch"),
            "monitor": cfg.scheduler.get("monitor"),
        }
    optimizer = _instantiate(cfg.optimizer, "optimizer")
    stepping = optimizer_stepping(cfg, optimizer)
    steps_per_epoch = math.ceil(len(datamodule.train_dataloader()) / stepping["accumulate_grad_batches"])
    check_optimization(cfg, model, optimizer, scheduler, steps_per_epoch=steps_per_epoch)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    module = ClassifierModule(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        mean=datamodule.mean,
        std=datamodule.std,
        seed=seed,
        decay_bias_and_norm=bool(cfg.decay_bias_and_norm),
        label_smoothing=reg.label_smoothing,
        # torch's LBFGS flattens gradients with .view(-1), which NHWC (channels_last) conv weights do not allow.
        channels_last=bool(cfg.channels_last) and len(datamodule.input_shape) == 3 and not is_lbfgs(optimizer),
        nan_check_every=int(cfg.nan_check_every),
        run_config=run_config,
        augment=augment,
        regularizers=StepRegularizers(reg, model),
        eval_repeats=reg.fmp_test_repeats if reg.fmp else 1,
        **stepping,
    )
    has_val = len(datamodule.y_val) > 0
    if scheduler and str(scheduler["monitor"] or "").startswith("val/") and not has_val:
        raise ConfigError(f"scheduler.monitor={scheduler['monitor']} needs a validation split; set data.val_size > 0")
    loggers = [_instantiate(node, f"logger.{name}") for name, node in (cfg.get("logger") or {}).items()]
    # The module steps the optimizer itself (manual optimization), so clipping and accumulation are its job.
    extra_trainer_args = {"gradient_clip_val": None, "gradient_clip_algorithm": None, "accumulate_grad_batches": 1}
    if not cfg.trainer.get("profiler"):
        extra_trainer_args["profiler"] = NullProfiler()
    trainer: L.Trainer = _instantiate(
        cfg.trainer,
        "trainer",
        callbacks=[*_build_callbacks(cfg, has_val), *extra_callbacks],
        logger=loggers or False,
        **extra_trainer_args,
    )
    if isinstance(trainer.accelerator, CPUAccelerator):
        _use_plain_cuda_probe()
    for logger in trainer.loggers:
        logger.log_hyperparams(run_config)  # resolved: no ${...} reaches a logger

    num_params = sum(p.numel() for p in model.parameters())
    if record is not None:
        record.update(data=datamodule.summary(), num_params=num_params)
        record.update(versions={**record.data["versions"], "lightning": L.__version__})

    fit_start = time.time()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_time = time.time() - fit_start
    if trainer.interrupted:
        raise KeyboardInterrupt
    metrics = _final_metrics(trainer)
    metrics["val/acc_best"] = float(module.val_acc_best)
    checkpoint = trainer.checkpoint_callback  # read before test(), which restores the callback's older state
    checkpoints = {
        "checkpoint_best": getattr(checkpoint, "best_model_path", None) or None,
        "checkpoint_last": getattr(checkpoint, "last_model_path", None) or None,
    }
    per_class: dict[str, list[float]] = {}
    if cfg.get("test"):
        # Early stopping means "keep the best-validation weights", whatever test_weights says.
        use_best = (cfg.get("test_weights", "best") == "best" or reg.early_stopping_patience > 0) and has_val
        test_ckpt = checkpoints["checkpoint_best"] if use_best else None
        trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt or None, verbose=False)
        metrics.update({k: v for k, v in _final_metrics(trainer).items() if k.startswith("test/")})
        per_class = module.test_per_class  # {"test/acc": [accuracy of class 0, class 1, ...]}
    epochs = trainer.current_epoch
    summary = {
        "metrics": metrics,
        "metrics_per_class": per_class,
        "epochs": epochs,
        "global_step": trainer.global_step,
        "fit_time_s": round(fit_time, 3),
        "train_samples_per_s": round(epochs * len(datamodule.y_train) / max(fit_time, 1e-9), 1),
        "num_params": num_params,
        "device": str(trainer.strategy.root_device),
        "world_size": trainer.world_size,
        **checkpoints,
    }
    if record is not None:
        record.update(**summary)
    return summary


def _print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    metrics = summary["metrics"]
    keys = [k for k in ("test/acc", "test/loss", "val/acc_best", "train/acc") if k in metrics]
    line = "  ".join(f"{k}={metrics[k]:.4f}" for k in keys)
    print(f"\n{line}\nepochs={summary['epochs']}  fit={summary['fit_time_s']:.1f}s  run dir: {run_dir}")


def main(cfg: DictConfig) -> float | None:
    """Entry point for train.py: returns test/acc (for Hydra sweepers) or exits non-zero with a clear message."""
    overrides, multirun = hydra_overrides()
    output_dir = Path(cfg.paths.output_dir)
    is_rank_zero = rank_zero_only.rank == 0
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # an unresolvable ${...}: report it like any other config error
        print(f"error: {err}", file=sys.stderr)
        sys.exit(ConfigError.exit_code)
    record = RunRecord(output_dir, config, overrides, seed=cfg.get("seed"))
    if is_rank_zero:
        record.write()
    try:
        summary = train(cfg, record)
    except AblateError as err:
        status = "diverged" if isinstance(err, DivergedError) else "failed"
        if is_rank_zero:
            record.finish(status, str(err))
        print(f"error: {err}\nresults: {record.path} (status: {status})", file=sys.stderr)
        if multirun:  # keep the sweep going; the table shows this run as failed/diverged
            return None
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        if is_rank_zero:
            record.finish("failed", "interrupted")
        sys.exit(130)
    except BaseException as err:
        if is_rank_zero:
            record.finish("failed", f"{type(err).__name__}: {err}")
        raise
    if is_rank_zero:
        record.finish("completed")
        _print_summary(summary, output_dir)
    return summary["metrics"].get("test/acc")
