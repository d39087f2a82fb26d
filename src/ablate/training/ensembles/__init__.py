"""Ensembles and weight averaging inside one run (the ``ensemble`` config group): snapshot, nocycle, ema, swa.

``build_callbacks(cfg)`` turns the group into Lightning callbacks (none for ``ensemble=none``: nothing per step);
``ensemble_metrics(...)`` scores what they collected after ``trainer.test``, as ``val/*_<variant>`` and
``test/*_<variant>`` metrics beside the raw model's ``val/acc`` / ``test/acc``. Scoring and probability averaging live
in ``ablate.training.scoring``, so every kind of ensemble is scored by one code path.
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
from ablate.errors import ConfigError
from ablate.optim.schedulers import swa_start_index
from ablate.training.checkpoint_io import load_verified
from ablate.training.ensembles.averaging import EMA, SWA, initial_weight_share, planned_updates
from ablate.training.ensembles.snapshot import SnapshotCollector, snapshot_steps
from ablate.training.scoring import average_probabilities, classification_metrics, eval_probabilities, named

__all__ = [
    "AUTO",
    "EMA",
    "SWA",
    "SnapshotCollector",
    "build_callbacks",
    "check_run_length",
    "choose_members",
    "ensemble_metrics",
    "ensemble_summary",
    "snapshot_steps",
    "swa_model_with_bn",
]

AUTO = "auto"  # ensemble.members=auto: the ensemble size is chosen on validation (choose_members)


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks that collect the ensemble/average of ``cfg.ensemble``, from a checked config: the knobs' values
    and their rules with the scheduler and the run's length are the rule book's (``ablate.config.rules``)."""
    ens = cfg.get("ensemble") or {"name": "none"}
    name = ens.get("name", "none")
    if name in ("snapshot", "nocycle"):
        return [SnapshotCollector(Path(cfg.paths.output_dir) / "snapshots", ens.cycles, ens.get("members"))]
    if name == "ema":
        every, start = int(ens.get("every_n_steps", 1)), int(ens.get("start_step", 0))
        warmup = bool(ens.get("warmup", True))
        return [EMA(decay=float(ens.decay), warmup=warmup, update_every_n_steps=every, update_starting_at_step=start)]
    if name == "swa":
        return [SWA(start_epoch=swa_start_index(ens.get("swa_start"), int(cfg.trainer.max_epochs)))]
    return []


def check_run_length(cfg: DictConfig, total_steps: int) -> list[str]:
    """Checks of the ensemble knobs that need the run's length in optimizer steps, run before training: settings that
    would collect nothing (or fewer snapshots than asked) are ConfigErrors; the returned warnings (one line each)
    go to results.json's ``warnings``."""
    ens = cfg.get("ensemble") or {}
    name = ens.get("name", "none")
    if name in ("snapshot", "nocycle"):
        cycles = int(ens.cycles)
        snapshot_steps(total_steps, cycles)  # a ConfigError naming ensemble.cycles when T < M
        if name == "snapshot" and total_steps < 2 * cycles:
            short = 2 * cycles - total_steps  # T // M == 1 here: T - M cycles of 2 steps, the rest of 1
            return [
                f"ensemble=snapshot: {short} of the {cycles} cycles last 1 optimizer step ({total_steps} steps in "
                f"all), so they train at the peak LR only and their snapshots are not annealed; use "
                f"ensemble.cycles<={total_steps // 2} or a longer run"
            ]
        return []
    if name != "ema":
        return []
    decay, warmup = float(ens.decay), bool(ens.get("warmup", True))
    start, every = int(ens.get("start_step", 0)), int(ens.get("every_n_steps", 1))
    updates = planned_updates(total_steps, start, every)
    if updates == 0:
        raise ConfigError(
            f"ensemble.start_step={start} leaves no EMA update in this run of {total_steps} optimizer steps "
            f"(steps 0..{total_steps - 1}, every {every}); e.g. ensemble.start_step=0, or raise trainer.max_epochs"
        )
    share = initial_weight_share(decay, updates, warmup)
    if share <= 0.01:
        return []
    return [
        f"ensemble=ema: decay={decay} with warmup={str(warmup).lower()} leaves {share:.0%} of the final average on "
        f"the initial weights after this run's {updates} updates; set ensemble.warmup=true or lower ensemble.decay"
    ]


def _full_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> InMemoryLoader:
    return InMemoryLoader(x, y, batch_size, shuffle=False)  # the whole split on every rank, in order


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
        probs, targets = eval_probabilities(model, module, loader)
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


def choose_members(val_acc: dict[int, float], val_nll: dict[int, float] | None = None) -> int:
    """``ensemble.members=auto``: the m whose ensemble of the last m snapshots has the best validation accuracy
    (``val/acc_snapshot_ens<m>``; test metrics never reach this function). Ties are common on small validation sets
    (one image of 144 is 0.7 points): among the tied sizes the lowest validation NLL (``val/nll_snapshot_ens<m>``,
    continuous, so it rarely ties) decides, then the larger m. NLL rather than "always the larger m" because a tie in
    accuracy says nothing about whether an under-trained early snapshot helps; its probabilities do."""
    best = max(val_acc.values())
    tied = [m for m, acc in val_acc.items() if acc == best]
    nll = val_nll or {}
    return min(tied, key=lambda m: (nll.get(m, 0.0), -m))


def _snapshot_metrics(callback: SnapshotCollector, module: Any, splits: dict[str, InMemoryLoader], n: int) -> Scores:
    scores: Scores = ({}, {})
    paths = callback.paths()
    if not paths:
        return scores
    model = copy.deepcopy(module.model).to(module.mean.device)
    probs: dict[str, list[torch.Tensor]] = {stage: [] for stage in splits}
    targets: dict[str, torch.Tensor] = {}
    metrics = scores[0]
    for k, path in enumerate(paths, start=1):
        state = load_verified(path, map_location=module.mean.device)  # zip CRCs checked: a damaged file is one line
        model.load_state_dict({key[len("model.") :]: v for key, v in state.items() if key.startswith("model.")})
        for stage, loader in splits.items():
            p, targets[stage] = eval_probabilities(model, module, loader)
            probs[stage].append(p)
            metrics[f"{stage}/acc_snapshot{k}"] = classification_metrics(p, targets[stage], n)["acc"]
    for stage in splits:
        for m in range(1, len(paths) + 1):  # the ensemble-size curve: the last m snapshots, m = 1..M
            last_m = average_probabilities(probs[stage][-m:], space="prob")
            scored = classification_metrics(last_m, targets[stage], n)
            metrics[f"{stage}/acc_snapshot_ens{m}"] = scored["acc"]
            if stage == "val":  # the tie-break of members=auto
                metrics[f"val/nll_snapshot_ens{m}"] = scored["nll"]
    members = callback.members or len(paths)
    if members == AUTO:  # chosen on validation only (ablate.config.rules refuses auto without a validation split)
        if "val" not in splits:
            raise ConfigError("ensemble.members=auto chooses on validation; set data.val_size > 0 or ensemble.members")
        sizes = range(1, len(paths) + 1)
        members = choose_members(
            {m: metrics[f"val/acc_snapshot_ens{m}"] for m in sizes},
            {m: metrics[f"val/nll_snapshot_ens{m}"] for m in sizes},
        )
    members = callback.chosen_members = min(int(members), len(paths))
    for stage in splits:
        ensemble = average_probabilities(probs[stage][-members:], space="prob")
        _named(classification_metrics(ensemble, targets[stage], n), stage, "snapshot_ens", scores)
    return scores


def ensemble_summary(callbacks: Sequence[L.Callback]) -> dict[str, Any]:
    """What the ensemble callbacks collected, for results.json's ``ensemble`` entry (empty for ensemble=none)."""
    summary: dict[str, Any] = {}
    for callback in callbacks:
        if isinstance(callback, SnapshotCollector):
            paths = callback.paths()
            summary.update(snapshot_steps=sorted(callback.taken), snapshots=paths)
            configured = callback.members if isinstance(callback.members, int) else len(paths)
            members = callback.chosen_members or min(len(paths), configured)
            summary.update(members=members, members_rule=callback.members or "all")
            if callback.members == AUTO:
                summary["members_chosen_on"] = (
                    "val/acc_snapshot_ens<m>, ties -> lower val/nll_snapshot_ens<m>, then larger m"
                )
        elif isinstance(callback, SWA):
            summary.update(swa_start_epoch=callback.start_epoch, swa_epochs_averaged=callback.n_averaged)
        elif isinstance(callback, EMA):
            summary.update(
                ema_decay=callback.decay,
                ema_warmup=callback.warmup,
                ema_updates=callback.updates,
                initial_weight_share=callback.initial_weight_share(),
            )
    return summary
