"""Evaluation metrics of predicted class probabilities: the shared scorer of test loops, ensembles and evaluate.py.

Everything here works on whole-split probability tensors ``[N, C]`` (cheap next to a forward pass over the split)
and uses torchmetrics' functional metrics, so single models, averaged weights, snapshot ensembles, test-time
averaging and ``evaluate.py`` are all scored by the same code. Training steps never come here (see metrics.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_calibration_error

from ablate.layers.dropconnect import _DropConnectMixin
from ablate.layers.kinds import DROPOUTS

# Scalar metric names (before the "<stage>/" prefix and any "_<variant>" suffix); per-class accuracy is a list.
SCALAR_METRICS = ("acc", "acc_top5", "nll", "ece")
ECE_BINS = 15  # Guo et al. 2017 / Lakshminarayanan et al. 2017 use 15 equal-width confidence bins


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Accuracy, top-5 accuracy (only when there are more than 5 classes), NLL, ECE and per-class accuracy.

    ``probs`` are probabilities (rows sum to 1), not logits: an ensemble's average has no logits.
    """
    probs, targets = probs.detach().float().cpu(), targets.detach().cpu()
    if targets.ndim == 2:  # soft targets: score against their argmax
        targets = targets.argmax(dim=1)
    metrics: dict[str, Any] = {
        "acc": float(multiclass_accuracy(probs, targets, num_classes, average="micro")),
        "nll": float(torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), targets)),
        "ece": float(multiclass_calibration_error(probs, targets, num_classes, n_bins=ECE_BINS, norm="l1")),
    }
    if num_classes > 5:
        metrics["acc_top5"] = float(multiclass_accuracy(probs, targets, num_classes, top_k=5, average="micro"))
    per_class = multiclass_accuracy(probs, targets, num_classes, average=None)
    metrics["acc_per_class"] = [round(float(v), 6) for v in per_class]
    return metrics


def named(metrics: dict[str, Any], stage: str, variant: str = "") -> dict[str, Any]:
    """``{"acc": ..}`` -> ``{"test/acc_ema": ..}`` for stage "test" and variant "ema" (no suffix when empty)."""
    suffix = f"_{variant}" if variant else ""
    return {f"{stage}/{name}{suffix}": value for name, value in metrics.items()}


def average_probabilities(members: list[torch.Tensor], space: str = "prob") -> torch.Tensor:
    """The ensemble's class probabilities from its members' outputs.

    ``space="prob"`` (the default, Huang et al. 2017; Lakshminarayanan et al. 2017): members give probabilities and
    the ensemble is their mean. ``space="logit"``: members give logits; the ensemble is the softmax of their mean.
    """
    if not members:
        raise ValueError("an ensemble needs at least one member")
    stacked = torch.stack(members)
    if space == "prob":
        return stacked.mean(0)
    if space == "logit":
        return stacked.mean(0).softmax(dim=1)
    raise ValueError(f"space must be 'prob' or 'logit', got {space!r}")


@torch.no_grad()
def predict(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    output: str = "prob",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` over ``batches`` of (inputs, targets); returns (probabilities or logits, targets), on the CPU.

    ``output``: "prob" (softmax of the model's logits), "logit" or "raw" (the model's output as it is, e.g. the
    log-probabilities of :func:`averaged_log_probs`).

    ``preprocess`` turns a raw batch into model input (e.g. uint8 -> normalized float on the model's device).
    The caller puts the model in eval mode (or not, for MC dropout).
    """
    outputs, labels = [], []
    for x, y in batches:
        if preprocess is not None:
            x = preprocess(x)
        logits = model(x).float()
        outputs.append((logits.softmax(dim=1) if output == "prob" else logits).cpu())  # "logit" and "raw" as is
        labels.append(y.cpu())
    return torch.cat(outputs), torch.cat(labels)


def gather_rows(all_gather: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    """All ranks' rows of ``t`` through ``all_gather`` (a LightningModule's): shards may differ by a few rows, so
    they are padded for the gather, then trimmed."""
    sizes = all_gather(torch.tensor(t.shape[0], device=t.device)).flatten().tolist()
    padded = torch.cat([t, t.new_zeros((max(sizes) - t.shape[0], *t.shape[1:]))])
    gathered = all_gather(padded)
    return torch.cat([gathered[rank, :size] for rank, size in enumerate(sizes)])


# -- test-time averaging: MC dropout, repeated stochastic passes (FMP), flip TTA ----------------------------------
# Layers whose train mode samples a random mask: dropout of every kind, and DropConnect (MC DropConnect).
MC_LAYERS: tuple[type, ...] = (*DROPOUTS, _DropConnectMixin)


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The layers that MC dropout samples: dropout/DropConnect layers with a drop rate above 0."""
    return [m for m in model.modules() if isinstance(m, MC_LAYERS) and float(getattr(m, "p", 0.0)) > 0]


@contextmanager
def mc_dropout(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Gal & Ghahramani 2016: the model in eval mode except its dropout layers, which keep sampling masks.

    Batch norm stays in eval mode (running statistics), so only the dropout masks differ between passes.
    The model's previous mode is restored on exit.
    """
    was_training = model.training
    layers = dropout_layers(model)
    model.eval()
    for layer in layers:
        layer.train()
    try:
        yield layers
    finally:
        model.train(was_training)


# The floor under averaged probabilities before their log in the module's eval step (its val/test numbers depend on
# it); evaluate.py's averages use the smallest normal float32 instead.
PROB_FLOOR = 1e-12


def stochastic_passes(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    passes: int,
    flip: bool = False,
    floor: float = PROB_FLOOR,
    fp32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one implementation of "average R stochastic passes" (FMP's repeated passes, MC dropout, flip TTA):
    (log of the class probabilities averaged over ``passes`` forward passes of ``x`` and, with ``flip``, of its
    horizontal mirror, clamped at ``floor``; the first pass's probabilities, Graham 2014's single-pass result).

    ``fp32`` takes the softmax in float32 (evaluate.py); the training module's eval step keeps the model's dtype.
    """
    views = [x, x.flip(-1)] if flip else [x]
    probs = [(model(v).float() if fp32 else model(v)).softmax(dim=1) for v in views for _ in range(passes)]
    return average_probabilities(probs).clamp_min(floor).log(), probs[0]


def pass_agreement(single: torch.Tensor, averaged: torch.Tensor, targets: torch.Tensor) -> dict[str, int]:
    """McNemar's counts for one pass vs the R-pass average on the same images: how many only the average got right,
    and only the single pass (``test_passes`` in results.json; experiments/fractional_max_pooling/test_passes.py)."""
    single_right, averaged_right = single.argmax(dim=1) == targets, averaged.argmax(dim=1) == targets
    return {
        "images": int(targets.numel()),
        "only_averaged_right": int((averaged_right & ~single_right).sum()),
        "only_single_right": int((single_right & ~averaged_right).sum()),
    }


def eval_logits(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, repeats: int = 1
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the training module's eval step scores: the logits, or for ``repeats`` > 1 the log of the mean
    probabilities of that many passes, with the first pass's probabilities (None for one pass). The averaged model
    of EMA/SWA and the snapshots are scored the same way."""
    if repeats > 1:
        return stochastic_passes(model, x, repeats)
    return model(x), None


def eval_probabilities(
    model: nn.Module, module: Any, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(class probabilities, targets) of ``model``, put in eval mode, over raw ``batches``, scored as the training
    module's eval step scores: its normalization and its R stochastic passes (``module.eval_repeats``). Used for the
    averaged models and snapshots, and for the eval-mode pass over the training split (``train/acc_eval``)."""
    repeats = int(getattr(module, "eval_repeats", 1))
    model.eval()
    return predict(lambda x: eval_logits(model, x, repeats)[0], batches, module.normalize)


def averaged_log_probs(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, passes: int = 1, flip: bool = False
) -> torch.Tensor:
    """Log of the class probabilities averaged over ``passes`` forward passes of ``x`` and, with ``flip``, of its
    horizontal mirror (flip TTA): 2 x passes predictions averaged by :func:`stochastic_passes`.

    One pass without flip returns the exact log-softmax of the logits. Log-probabilities are returned because
    their mean equals the mean of the logits up to a per-row constant, so a logit-space ensemble stays exact.
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    if passes == 1 and not flip:
        return model(x).float().log_softmax(dim=1)
    return stochastic_passes(model, x, passes, flip, floor=torch.finfo(torch.float32).tiny, fp32=True)[0]
