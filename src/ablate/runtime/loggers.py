"""Logger factories that need a decision at run time: names, groups and tags from the Hydra job.

In a sweep, every run is named by its overrides, sorted (``optimizer=adam,seed=1``; not tags or ckpt_path), W&B
runs of one multirun share a group (the sweep dir's name) and carry the user's ``tags`` plus the overrides'
config-group choices, and TensorBoard runs get the overrides as their version dir and their hyperparameters (with the
final metrics) in the HParams tab. Outside Hydra (tests, notebooks) nothing is derived.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger

from ablate.training.lightning_fast import drop_null_anonymous

# Overrides that label or resume a run rather than change what it computes: not part of its name.
_NOT_SETTINGS = ("tags=", "ckpt_path=", "+tags=", "task_name=")


def _job() -> tuple[str | None, str | None, list[str]]:
    """(run name from the overrides, the multirun's group, the task overrides) of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None, []
    hydra_cfg = HydraConfig.get()
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    name = ",".join(sorted(o for o in overrides if not o.startswith(_NOT_SETTINGS))) or None
    group = Path(str(hydra_cfg.sweep.dir)).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    return name, group, overrides


def _group_choices(overrides: Sequence[str]) -> list[str]:
    """``optimizer=adam``-style overrides (a config group's choice), usable as tags (W&B caps a tag at 64 chars)."""
    return [
        o
        for o in overrides
        if "=" in o and "." not in o.split("=", 1)[0] and len(o) <= 64 and not o.startswith(_NOT_SETTINGS)
    ]


def wandb_logger(
    name: str | None = None, group: str | None = None, tags: Sequence[str] = (), **kwargs: Any
) -> WandbLogger:
    """W&B offline by default: online only with WANDB_API_KEY set, and WANDB_MODE (offline/online/disabled) wins.

    Offline runs leave their files in <save_dir>/wandb/offline-run-*; `wandb sync <dir>` uploads them later.
    """
    job_name, job_group, overrides = _job()
    mode = os.environ.get("WANDB_MODE")
    offline = mode != "online" if mode else not os.environ.get("WANDB_API_KEY")
    all_tags = list(dict.fromkeys([*tags, *_group_choices(overrides)]))
    if job_group is not None:
        import wandb

        if wandb.run is not None:  # the previous job's run (jobs share this process): Lightning would log into it
            wandb.finish()
        if "settings" not in kwargs:  # a multirun job prints one line; W&B's banner is 9
            kwargs["settings"] = wandb.Settings(silent=True)
    logger = WandbLogger(
        offline=offline, name=name or job_name, group=group or job_group, tags=all_tags or None, **kwargs
    )
    drop_null_anonymous(logger)  # wandb's once-per-run warning about Lightning's anonymous=None
    return logger


def tensorboard_logger(version: str | None = None, **kwargs: Any) -> TensorBoardLogger:
    """TensorBoard with the run's overrides as its version dir, so runs of a sweep are told apart by setting."""
    if version is None:
        job_name = _job()[0]
        version = job_name.replace(os.sep, "_") if job_name else ""
    return TensorBoardLogger(version=version, **kwargs)


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def log_final_hparams(loggers: Sequence[Logger], seed: int, metrics: dict[str, float]) -> None:
    """TensorBoard's HParams tab: the run's overrides (and seed) beside its final metrics.

    Lightning writes that tab only when hyperparameters are logged together with metrics, hence this call at the end.
    """
    overrides = _job()[2]
    params: dict[str, Any] = {"seed": seed}
    for override in overrides:
        if "=" in override and not override.startswith(("~", "+")):
            key, value = override.split("=", 1)
            params[key] = _parse_value(value)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics={f"hparams/{k}": v for k, v in metrics.items()})
