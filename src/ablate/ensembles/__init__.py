"""Ensembles and weight averaging inside one run (the ``ensemble`` config group): snapshot, nocycle, ema, swa.

``build_callbacks(cfg)`` turns the group into Lightning callbacks (none for ``ensemble=none``: nothing per step);
``ensemble_metrics(...)`` scores what they collected after ``trainer.test``, as ``val/*_<variant>`` and
``test/*_<variant>`` metrics beside the raw model's ``val/acc`` / ``test/acc``. Scoring and probability averaging live
in ``ablate.evaluation``, so every kind of ensemble is scored by one code path.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim.swa_utils import update_bn

from ablate.data.loader import InMemoryLoader
from ablate.ensembles.averaging import EMA, SWA, eval_logits
from ablate.ensembles.snapshot import SnapshotCollector, snapshot_steps
from ablate.errors import ConfigError
from ablate.evaluation import average_probabilities, classification_metrics, named, predict
from ablate.optim.schedulers import swa_start_index

__all__ = [
    "EMA",
    "SWA",
    "SnapshotCollector",
    "build_callbacks",
    "ensemble_metrics",
    "ensemble_summary",
    "snapshot_steps",
    "swa_model_with_bn",
]

NAMES = ("none", "snapshot", "nocycle", "ema", "swa")


def _scheduler_target(cfg: DictConfig) -> str:
    return str(cfg.scheduler.fn.get("_target_", "")) if cfg.get("scheduler") and cfg.scheduler.get("fn") else ""


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks that collect the ensemble/average of ``cfg.ensemble``; checks its knobs first."""
    ens = cfg.get("ensemble") or {"name": "none"}
    name = ens.get("name", "none")
    if name not in NAMES:
        raise ConfigError(f"ensemble.name '{name}' is unknown; choose ensemble=none|snapshot|nocycle|ema|swa")
    if name == "none":
        return []
    scheduler = _scheduler_target(cfg)
    if name in ("snapshot", "nocycle"):
        cycles, members = ens.get("cycles"), ens.get("members")
        if not isinstance(cycles, int) or cycles < 1:
            raise ConfigError(f"ensemble.cycles must be an integer >= 1, got {cycles!r}")
        if members is not None and not (isinstance(members, int) and 1 <= members <= cycles):
            raise ConfigError(f"ensemble.members must be in [1, ensemble.cycles={cycles}] or null, got {members!r}")
        is_snapshot_schedule = scheduler.endswith("schedulers.snapshot")
        if name == "snapshot" and not is_snapshot_schedule:
            raise ConfigError(
                f"ensemble=snapshot takes snapshots at the LR minima of scheduler=snapshot, but the scheduler is "
                f"'{scheduler or 'none'}'; drop the scheduler override, or use ensemble=nocycle for snapshots of it"
            )
        if is_snapshot_schedule and int(cfg.scheduler.fn.cycles) != cycles:
            raise ConfigError(
                f"scheduler.fn.cycles={cfg.scheduler.fn.cycles} differs from ensemble.cycles={cycles}; "
                "set ensemble.cycles only (the scheduler reads it)"
            )
        if is_snapshot_schedule and cfg.scheduler.get("interval") != "step":
            raise ConfigError("ensemble=snapshot needs scheduler.interval=step (the paper's per-iteration schedule)")
        return [SnapshotCollector(Path(cfg.paths.output_dir) / "snapshots", cycles, members)]
    if name == "ema":
        decay = ens.get("decay")
        if not isinstance(decay, (int, float)) or not 0.0 <= decay <= 1.0:
            raise ConfigError(f"ensemble.decay must be in [0, 1], got {decay!r}")
        every, start = int(ens.get("every_n_steps", 1)), int(ens.get("start_step", 0))
        if every < 1 or start < 0:
            raise ConfigError(f"ensemble.every_n_steps must be >= 1 and start_step >= 0, got {every}, {start}")
        return [EMA(decay=float(decay), update_every_n_steps=every, update_starting_at_step=start)]
    # swa
    max_epochs = int(cfg.trainer.get("max_epochs") or 0)
    if max_epochs < 1:
        raise ConfigError("ensemble=swa averages once per epoch; set trainer.max_epochs >= 1")
    start = swa_start_index(ens.get("swa_start"), max_epochs)
    if ens.get("swa_lr") is not None and not scheduler.endswith("schedulers.swa"):
        raise ConfigError(
            f"ensemble.swa_lr is set but the scheduler is '{scheduler or 'none'}', which ignores it; "
            "drop the scheduler override (ensemble=swa selects scheduler=swa) or set ensemble.swa_lr=null"
        )
    return [SWA(start_epoch=start)]


def _full_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> InMemoryLoader:
    return InMemoryLoader(x, y, batch_size, shuffle=False)  # the whole split on every rank, in order


def _probabilities(model: nn.Module, module: Any, loader: InMemoryLoader) -> tuple[torch.Tensor, torch.Tensor]:
    repeats = int(getattr(module, "eval_repeats", 1))
    model.eval()
    return predict(lambda x: eval_logits(model, x, repeats), loader, module.normalize)


def _splits(datamodule: Any, test: bool) -> dict[str, InMemoryLoader]:
    splits = {}
    if len(datamodule.y_val):
        splits["val"] = _full_loader(datamodule.x_val, datamodule.y_val, datamodule.eval_batch_size)
    if test:
        splits["test"] = _full_loader(datamodule.x_test, datamodule.y_test, datamodule.eval_batch_size)
    return splits


Scores = tuple[dict[str, float], dict[str, list[float]]]  # (metrics, per-class accuracy as in results.json)


def _named(metrics: dict[str, Any], stage: str, variant: str, scores: Scores) -> None:
    """Adds ``metrics`` under ``<stage>/<name>_<variant>``; per-class accuracy goes to ``<stage>/acc_<variant>``."""
    metrics = dict(metrics)
    scores[1][f"{stage}/acc_{variant}"] = metrics.pop("acc_per_class")
    scores[0].update(named(metrics, stage, variant))


def _score(model: nn.Module, module: Any, splits: dict[str, InMemoryLoader], variant: str, n: int) -> Scores:
    scores: Scores = ({}, {})
    for stage, loader in splits.items():
        probs, targets = _probabilities(model, module, loader)
        _named(classification_metrics(probs, targets, n), stage, variant, scores)
    return scores


def swa_model_with_bn(callback: SWA, module: Any, datamodule: Any) -> nn.Module:
    """A copy of the SWA average with its BN statistics recomputed by one pass over the (un-augmented) train split."""
    model = copy.deepcopy(callback.average_model).to(module.mean.device)
    loader = _full_loader(datamodule.x_train, datamodule.y_train, datamodule.batch_size)
    with torch.no_grad():
        update_bn(((module.normalize(x), y) for x, y in loader), model)
    return model.eval()


def ensemble_metrics(
    callbacks: Sequence[L.Callback],
    module: Any,
    datamodule: Any,
    test: bool = True,
    device: torch.device | None = None,
) -> Scores:
    """Validation (and test) metrics of the models the ensemble callbacks collected, scored on whole splits, and
    their per-class accuracies (``{"test/acc_ema": [...]}``, results.json's ``metrics_per_class``).

    ``device``: where to score (Lightning moves the module back to the CPU when fit/test end); every rank of a DDP
    run scores the whole split, so no collective is needed.
    """
    if device is not None:
        module.to(device)
    metrics: dict[str, float] = {}
    per_class: dict[str, list[float]] = {}
    n = int(datamodule.num_classes)
    splits = _splits(datamodule, test)
    for callback in callbacks:
        scores: Scores = ({}, {})
        if isinstance(callback, SnapshotCollector):
            scores = _snapshot_metrics(callback, module, splits, n)
        elif isinstance(callback, SWA):
            if callback.n_averaged == 0:  # e.g. early stopping before swa_start: the raw model's results stand
                warnings.warn("ensemble=swa: training ended before ensemble.swa_start; no */acc_swa", stacklevel=2)
            else:
                scores = _score(swa_model_with_bn(callback, module, datamodule), module, splits, "swa", n)
        elif isinstance(callback, EMA):
            model = copy.deepcopy(callback.average_model).to(module.mean.device)
            scores = _score(model, module, splits, "ema", n)
        metrics.update(scores[0])
        per_class.update(scores[1])
    return metrics, per_class


def _snapshot_metrics(callback: SnapshotCollector, module: Any, splits: dict[str, InMemoryLoader], n: int) -> Scores:
    scores: Scores = ({}, {})
    paths = callback.paths()
    if not paths:
        return scores
    members = callback.members or len(paths)
    model = copy.deepcopy(module.model).to(module.mean.device)
    probs: dict[str, list[torch.Tensor]] = {stage: [] for stage in splits}
    targets: dict[str, torch.Tensor] = {}
    metrics = scores[0]
    for k, path in enumerate(paths, start=1):
        state = torch.load(path, map_location=module.mean.device, weights_only=True)
        model.load_state_dict({key[len("model.") :]: v for key, v in state.items() if key.startswith("model.")})
        for stage, loader in splits.items():
            p, targets[stage] = _probabilities(model, module, loader)
            probs[stage].append(p)
            metrics[f"{stage}/acc_snapshot{k}"] = classification_metrics(p, targets[stage], n)["acc"]
    for stage in splits:
        ensemble = average_probabilities(probs[stage][-members:], space="prob")
        _named(classification_metrics(ensemble, targets[stage], n), stage, "snapshot_ens", scores)
        for m in range(1, len(paths) + 1):  # the ensemble-size curve: the last m snapshots, m = 1..M
            last_m = average_probabilities(probs[stage][-m:], space="prob")
            metrics[f"{stage}/acc_snapshot_ens{m}"] = classification_metrics(last_m, targets[stage], n)["acc"]
    return scores


def ensemble_summary(callbacks: Sequence[L.Callback]) -> dict[str, Any]:
    """What the ensemble callbacks collected, for results.json's ``ensemble`` entry (empty for ensemble=none)."""
    summary: dict[str, Any] = {}
    for callback in callbacks:
        if isinstance(callback, SnapshotCollector):
            paths = callback.paths()
            summary.update(
                snapshot_steps=sorted(callback.taken),
                snapshots=paths,
                members=min(callback.members or len(paths), len(paths)),
            )
        elif isinstance(callback, SWA):
            summary.update(swa_start_epoch=callback.start_epoch, swa_epochs_averaged=callback.n_averaged)
        elif isinstance(callback, EMA):
            summary.update(ema_decay=callback.decay, ema_updates=int(callback._average_model.n_averaged) - 1)
    return summary
