"""What a fitted run leaves: its final metrics, the test scores, the summary results.json records, the console line.

The training job (``ablate.runtime.job.train``) reads these in order: ``after_fit`` before ``test`` (which sets the
trainer up again and restores the checkpoint callback's older state), then ``summarize``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from ablate.build.recipe import Recipe
from ablate.training.ensembles import ensemble_metrics, ensemble_summary
from ablate.training.train_eval import eval_mode_train_metrics


@dataclass
class Fitted:
    metrics: dict[str, float]  # final training and validation metrics; ``test`` adds the test split's
    lr_final: dict[str, float]
    checkpoints: dict[str, str | None]  # checkpoint_best, checkpoint_last


def final_metrics(trainer: L.Trainer) -> dict[str, float]:
    # LearningRateMonitor's lr-<optimizer>/pg<i> holds the LR at the start of the last epoch (it logs at epoch start),
    # which reads as final and is not: results.json records the final LR as `lr_final` instead (final_lrs).
    items = sorted(trainer.callback_metrics.items())
    return {k: float(v) for k, v in items if v.numel() == 1 and not k.startswith("lr-")}


def final_lrs(trainer: L.Trainer) -> dict[str, float]:
    """Each parameter group's learning rate after the last optimizer and scheduler step (``AdamW/pg1``: group 1)."""
    return {
        f"{type(opt).__name__}/pg{i}": float(group["lr"])
        for opt in trainer.optimizers
        for i, group in enumerate(opt.param_groups, 1)
    }


def after_fit(trainer: L.Trainer, recipe: Recipe) -> Fitted:
    """The fit's metrics (best validation values included), final LRs and checkpoint paths, read before ``test``."""
    module = recipe.module
    metrics = final_metrics(trainer)
    metrics["val/acc_best"] = float(module.val_acc_best)
    if math.isfinite(float(module.val_loss_best)):  # inf: no validation epoch ran
        metrics["val/loss_best"] = float(module.val_loss_best)
    metrics.update(eval_mode_train_metrics(module, recipe.datamodule, _trained_images(trainer, recipe)))
    checkpoint = trainer.checkpoint_callback
    checkpoints = {
        "checkpoint_best": getattr(checkpoint, "best_model_path", None) or None,
        "checkpoint_last": getattr(checkpoint, "last_model_path", None) or None,
    }
    return Fitted(metrics, final_lrs(trainer), checkpoints)


def _trained_images(trainer: L.Trainer, recipe: Recipe) -> int | None:
    """How many training images an epoch saw when ``trainer.limit_train_batches`` cut it short (None: all); the
    eval-mode pass over the training split (``train/acc_eval``) scores no more than those."""
    batches = trainer.num_training_batches
    if not math.isfinite(batches) or trainer.limit_train_batches in (None, 1.0):
        return None
    return int(batches) * int(recipe.datamodule.batch_size)


def test(trainer: L.Trainer, recipe: Recipe, fitted: Fitted, run_test: bool) -> dict[str, list[float]]:
    """Test the chosen weights (``run_test``) and score the in-run ensembles; adds to ``fitted.metrics`` and returns
    the per-class accuracies (``{"test/acc": [class 0, class 1, ...], "test/acc_ema": [...]}``)."""
    module, datamodule = recipe.module, recipe.datamodule
    per_class: dict[str, list[float]] = {}
    if run_test:
        test_ckpt = fitted.checkpoints["checkpoint_best"] if recipe.test_best else None
        trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt or None, verbose=False)
        fitted.metrics.update({k: v for k, v in final_metrics(trainer).items() if k.startswith("test/")})
        per_class = module.test_per_class
    if recipe.ensembles:  # the averaged / ensembled models, scored beside the raw weights
        device = trainer.strategy.root_device
        extra, extra_per_class = ensemble_metrics(recipe.ensembles, module, datamodule, run_test, device)
        fitted.metrics.update(extra)
        per_class = {**per_class, **extra_per_class}
    return per_class


def summarize(
    trainer: L.Trainer, recipe: Recipe, fitted: Fitted, per_class: dict, fit_time: float, warnings: list[str]
) -> dict[str, Any]:
    """The run's results.json fields (metrics, timing, checkpoints, the ensemble's choices, warnings)."""
    epochs = trainer.current_epoch
    summary = {
        "metrics": fitted.metrics,
        "metrics_per_class": per_class,
        "epochs": epochs,
        "global_step": trainer.global_step,
        "fit_time_s": round(fit_time, 3),
        "train_samples_per_s": round(epochs * len(recipe.datamodule.y_train) / max(fit_time, 1e-9), 1),
        "num_params": num_params(recipe),
        "device": str(trainer.strategy.root_device),
        "world_size": trainer.world_size,
        "lr_final": fitted.lr_final,
        **fitted.checkpoints,
    }
    if getattr(recipe.module, "test_passes", None):  # R > 1 test passes: McNemar counts, 1 pass vs R
        summary["test_passes"] = recipe.module.test_passes
    if recipe.ensembles:
        name = recipe.run_config["ensemble"]["name"]
        summary["ensemble"] = {"name": name, **ensemble_summary(recipe.ensembles)}
    if warnings:
        summary["warnings"] = warnings
    return summary


def num_params(recipe: Recipe) -> int:
    return sum(p.numel() for p in recipe.model.parameters())


def start_fields(recipe: Recipe, torch_threads: int) -> dict[str, Any]:
    """What results.json knows once the run is built: its data, size, threads, transfer source, Lightning's version."""
    fields: dict[str, Any] = {
        "data": recipe.datamodule.summary(),
        "num_params": num_params(recipe),
        "torch_threads": torch_threads,
    }
    if hasattr(recipe.model, "transfer_summary"):
        fields["transfer"] = recipe.model.transfer_summary()
    return fields


def print_summary(summary: dict[str, Any], run_dir: Path, job: list[str] | None = None) -> None:
    """The final metrics; a multirun job (``job``: its overrides) in one line, the sweep's recap names the folder."""
    from ablate.runtime.sweep_continue import job_line
    from ablate.runtime.sweep_recap import in_search

    metrics = summary["metrics"]
    averaged = [f"test/acc_{variant}" for variant in ("snapshot_ens", "ema", "swa")]  # beside the single model
    keys = [k for k in ("test/acc", *averaged, "test/loss", "val/acc_best", "train/acc") if k in metrics]
    if in_search():  # a search trial shows validation only: test numbers per trial invite choosing on test
        keys = [k for k in keys if not k.startswith("test/")]
    line = "  ".join(f"{k}={metrics[k]:.4f}" for k in keys)
    ensemble = summary.get("ensemble") or {}
    if ensemble.get("members_rule") == "auto":  # ensemble.members=auto: which size validation chose
        line += f"  (snapshot_ens: last {ensemble['members']} of {len(ensemble['snapshots'])}, m chosen on val)"
    timing = f"epochs={summary['epochs']}  fit={summary['fit_time_s']:.1f}s"
    if job is not None:  # a search's sweeper prints its own line per trial
        if not in_search():
            print(job_line(job, f"{line}  {timing}"), flush=True)
        return
    print(f"\n{line}\n{timing}  run dir: {run_dir}")
