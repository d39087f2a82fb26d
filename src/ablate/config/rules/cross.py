"""Rules between keys (and between groups) of train.py's config, run on the resolved, coerced plain values after
every single key passed its own rule. Each raises a one-line ConfigError or returns warnings (combinations that run
but mislead). Nothing here writes into the config: a value the rules reinterpret (``data.val_size=5000.0`` is a count)
is returned to the caller, which puts it in the checked copy."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from ablate.config import metric_registry
from ablate.config.rules.core import check_value, integer
from ablate.config.rules.train_keys import LBFGS_TARGETS, PLATEAU, TRANSFER
from ablate.config.schema import AugmentConfig, RegConfig, turned_on
from ablate.errors import ConfigError


def check_val_size(data: dict[str, Any]) -> dict[str, Any]:
    """A fraction in [0, 1) or a whole count of samples; whether a count fits is known once the data are loaded.
    Returns ``{"data.val_size": count}`` when a whole float means a count (5000.0 -> 5000), else ``{}``."""
    value = data.get("val_size")
    if value is None or (data.get("num_folds") or 0) >= 2:
        return {}
    if isinstance(value, float) and not value.is_integer() and not 0 <= value < 1:
        raise ConfigError(
            f"data.val_size must be a fraction in [0, 1) or a sample count, got {value}; e.g. data.val_size=0.1"
        )
    if isinstance(value, float) and value >= 1:  # 5000.0 -> a count of 5000
        return {"data.val_size": int(value)}
    return {}


def check_ckpt_path(path: str | None) -> None:
    if not path:
        return
    ckpt = Path(path)
    if ckpt.is_dir():
        inside = next((p for p in (ckpt / "checkpoints" / "last.ckpt", ckpt / "last.ckpt") if p.is_file()), None)
        hint = f"use ckpt_path={inside}" if inside else "pass a checkpoint file, e.g. <run dir>/checkpoints/last.ckpt"
        raise ConfigError(f"ckpt_path={path} is a folder, not a checkpoint; {hint}")
    if not ckpt.exists():
        raise ConfigError(f"ckpt_path={path} does not exist; pass a run's checkpoints/last.ckpt")
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={path} is not a file; pass a run's checkpoints/last.ckpt")
    if not zipfile.is_zipfile(ckpt):  # torch.save writes a zip archive
        raise ConfigError(f"ckpt_path={path} is not a checkpoint (not a torch.save archive); pass a .ckpt file")


def check_ensemble_members(cfg: dict[str, Any]) -> None:
    """ensemble.members: auto (chosen on validation, so a validation split is needed), null (all M) or 1..M."""
    ensemble = cfg.get("ensemble") or {}
    if "members" not in ensemble:
        return
    members, cycles = ensemble["members"], ensemble.get("cycles")
    if members == "auto":
        if not has_validation(cfg.get("data") or {}, cfg.get("trainer") or {}):
            raise ConfigError(
                "ensemble.members=auto chooses the ensemble size on validation, but there is no validation split; "
                "set data.val_size > 0 (e.g. data.val_size=0.1), or ensemble.members=null (all snapshots)"
            )
        return
    rule = integer(2, low=1, high=cycles, nullable=True)
    try:
        check_value("ensemble.members", members, rule)
    except ConfigError:
        shown = repr(members) if isinstance(members, str) else json.dumps(members)
        raise ConfigError(
            f"ensemble.members must be auto (chosen on validation), null (all) or an integer in [1, "
            f"ensemble.cycles={cycles}], got {shown}; e.g. ensemble.members=auto"
        ) from None


def has_validation(data: dict[str, Any], trainer: dict[str, Any]) -> bool:
    if (data.get("num_folds") or 0) >= 2:
        return True
    return bool(data.get("val_size")) and trainer.get("limit_val_batches") != 0


def check_modes(plain: dict[str, Any]) -> list[str]:
    """Every monitor's mode (callbacks' ``mode``, the plateau schedule's ``scheduler.fn.mode``) checked against the
    metric registry. Null means the monitor's direction and stays null here (the config is not mutated; the callbacks
    and run.py ask the registry where they are built). A contradicting mode is refused (the checkpoint's is a
    warning: training is unaffected, only which epoch is called "best"). An unknown monitored metric is an error."""
    callbacks, scheduler = plain.get("callbacks") or {}, plain.get("scheduler") or {}
    fn = scheduler.get("fn") or {}
    pairs = [
        (f"callbacks.{name}", node.get("monitor"), node.get("mode"))
        for name, node in callbacks.items()
        if isinstance(node, dict) and "mode" in node
    ]
    if fn.get("_target_") == PLATEAU:
        pairs.append(("scheduler", scheduler.get("monitor"), fn.get("mode")))
    warnings = []
    for where, monitor, mode in pairs:
        mode_key = f"{where}.mode" if where != "scheduler" else "scheduler.fn.mode"
        if not monitor:
            continue
        try:
            wanted = metric_registry.mode(monitor)
        except ConfigError as err:
            raise ConfigError(f"{where}.monitor={monitor}: {err}") from None
        if mode is None:  # left null in the config (never mutated): the callbacks and run.py ask the registry
            continue
        if mode == wanted:
            continue
        better = "lower" if wanted == "min" else "higher"
        message = (
            f"{mode_key}={mode} contradicts monitor {monitor} ({better} is better, ablate.config.metric_registry); "
            f"use {mode_key}={wanted}, or leave it null to follow the monitor"
        )
        if mode_key != "callbacks.model_checkpoint.mode":
            raise ConfigError(message)
        # Training itself is unaffected; only which checkpoint is called "best" (and tested) is inverted.
        warnings.append(f"{message} (the 'best' checkpoint is the worst epoch)")
    return warnings


def check_combinations(cfg: dict[str, Any]) -> list[str]:
    """Contradictions between keys (and between groups); returns warnings for combinations that run but mislead."""
    data, trainer = cfg.get("data") or {}, cfg.get("trainer") or {}
    optimizer, reg, callbacks = cfg.get("optimizer") or {}, cfg.get("reg") or {}, cfg.get("callbacks") or {}
    scheduler = cfg.get("scheduler") or {}
    fn = scheduler.get("fn") or {}
    folds, fold = data.get("num_folds") or 0, data.get("fold") or 0
    if folds >= 2 and not fold < folds:
        raise ConfigError(f"data.fold must be in [0, {folds}), got {fold}; e.g. data.fold={folds - 1}")
    no_val = "needs a validation split; set data.val_size > 0 (e.g. data.val_size=0.1)"
    if not has_validation(data, trainer):
        if reg.get("early_stopping_patience"):
            raise ConfigError(f"reg.early_stopping {no_val}")
        if str(scheduler.get("monitor") or "").startswith("val/"):
            raise ConfigError(f"scheduler.monitor={scheduler['monitor']} {no_val}")
        for name, node in callbacks.items():
            if name != "model_checkpoint" and str((node or {}).get("monitor") or "").startswith("val/"):
                raise ConfigError(f"callbacks.{name}.monitor={node['monitor']} {no_val}, or drop callbacks.{name}")
    warnings: list[str] = []
    for key, value in trainer.items():
        if key.startswith("limit_") and isinstance(value, float) and value > 1:
            raise ConfigError(
                f"trainer.{key} must be a fraction in [0, 1] or a whole number of batches, got {value}; "
                f"e.g. trainer.{key}=0.5"
            )
    if fn.get("base_lr") is not None and fn.get("max_lr") is not None and not fn["base_lr"] < fn["max_lr"]:
        raise ConfigError(
            f"scheduler.fn.base_lr={fn['base_lr']} must be below scheduler.fn.max_lr={fn['max_lr']} (the peak, "
            "optimizer.lr by default); lower scheduler.fn.base_lr or raise optimizer.lr"
        )
    if optimizer.get("nesterov") and not optimizer.get("momentum"):
        raise ConfigError("optimizer.nesterov=true needs optimizer.momentum > 0; e.g. optimizer.momentum=0.9")
    check_optimizer_and_model(optimizer, cfg.get("model") or {}, trainer)
    check_ensemble_and_scheduler(cfg.get("ensemble") or {}, scheduler, trainer)
    return warnings + _lbfgs_warnings(optimizer, reg, cfg.get("aug") or {}, cfg.get("model") or {})


def check_optimizer_and_model(optimizer: dict, model: dict, trainer: dict) -> None:
    """Rules between the optimizer, model=transfer and the trainer: transfer learning's LR scale and staged
    unfreezing, and L-BFGS's single parameter group and closure (read from ``_target_``: no torch here)."""
    transfer, lbfgs = model.get("_target_") in TRANSFER, optimizer.get("_target_") in LBFGS_TARGETS
    scaled = optimizer.get("backbone_lr_scale", 1.0) != 1.0
    if scaled and not transfer:
        raise ConfigError("optimizer.backbone_lr_scale needs a model with a backbone; use model=transfer or drop it")
    if scaled and lbfgs:
        raise ConfigError("optimizer=lbfgs takes a single parameter group; drop optimizer.backbone_lr_scale")
    unfreeze, max_epochs = model.get("unfreeze_at_epoch", 1), int(trainer.get("max_epochs") or -1)  # -1: max_steps
    if transfer and model.get("finetune", "full") == "staged" and 0 < max_epochs <= unfreeze:
        raise ConfigError(
            f"model.unfreeze_at_epoch must be in [1, trainer.max_epochs) = [1, {max_epochs}), got {unfreeze}; "
            "the backbone must join before the run ends (finetune=head never unfreezes)"
        )
    if lbfgs and (trainer.get("accumulate_grad_batches") or 1) > 1:
        raise ConfigError(
            "optimizer=lbfgs re-evaluates its closure; use a larger data.batch_size instead of "
            "trainer.accumulate_grad_batches"
        )


def check_ensemble_and_scheduler(ensemble: dict, scheduler: dict, trainer: dict) -> None:
    """Rules between the ensemble group, the scheduler it relies on and the run's length. The scheduler is read from
    its ``_target_`` string (no torch here): snapshots need scheduler=snapshot's per-step restarts with the same
    number of cycles, SWA averages once per epoch and only scheduler=swa reads ``ensemble.swa_lr``."""
    name, fn = ensemble.get("name", "none"), scheduler.get("fn") or {}
    target = str(fn.get("_target_") or "")
    if name in ("snapshot", "nocycle"):
        is_snapshot_schedule = target.endswith("schedulers.snapshot")
        if name == "snapshot" and not is_snapshot_schedule:
            raise ConfigError(
                f"ensemble=snapshot takes snapshots at the LR minima of scheduler=snapshot, but the scheduler is "
                f"'{target or 'none'}'; drop the scheduler override, or use ensemble=nocycle for snapshots of it"
            )
        cycles = ensemble.get("cycles")
        if is_snapshot_schedule and fn.get("cycles") != cycles:
            raise ConfigError(
                f"scheduler.fn.cycles={fn.get('cycles')} differs from ensemble.cycles={cycles}; "
                "set ensemble.cycles only (the scheduler reads it)"
            )
        if is_snapshot_schedule and scheduler.get("interval") != "step":
            raise ConfigError("ensemble=snapshot needs scheduler.interval=step (the paper's per-iteration schedule)")
    if name != "swa":
        return
    if int(trainer.get("max_epochs") or 0) < 1:
        raise ConfigError("ensemble=swa averages once per epoch; set trainer.max_epochs >= 1")
    if ensemble.get("swa_lr") is not None and not target.endswith("schedulers.swa"):
        raise ConfigError(
            f"ensemble.swa_lr is set but the scheduler is '{target or 'none'}', which ignores it; "
            "drop the scheduler override (ensemble=swa selects scheduler=swa) or set ensemble.swa_lr=null"
        )


# reg knobs that make the loss random from one evaluation to the next (their "off" value: RegConfig's default)
RANDOM_REG = ("dropout", "input_dropout", "spatial_dropout", "dropconnect", "fmp", "stochastic_depth", "input_noise",
              "weight_noise", "gradient_noise")  # fmt: skip


def _lbfgs_warnings(optimizer: dict, reg: dict, aug: dict, model: dict) -> list[str]:
    if optimizer.get("_target_") not in LBFGS_TARGETS:
        return []
    random_knobs = [f"model.{k}" for k in ("dropout", "input_dropout", "spatial_dropout") if model.get(k)]
    random_knobs += [f"reg.{k}" for k in turned_on(reg, RegConfig) if k in RANDOM_REG]
    random_knobs += [f"aug.{k}" for k in turned_on(aug, AugmentConfig)]
    if not random_knobs:
        return []
    return [
        f"optimizer=lbfgs assumes a deterministic loss, but {', '.join(random_knobs)} "
        f"{'make' if len(random_knobs) > 1 else 'makes'} each closure call differ (the line search and curvature "
        "pairs become noise); turn them off for L-BFGS"
    ]
