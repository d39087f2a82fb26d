"""Test-split scores of each member and of their ensemble, per prediction variant (plain, MC dropout, flip TTA).

Inputs are log-probabilities per variant (``saved_runs.member_log_probs``); the ensemble averages them with
``ablate.training.scoring.average_probabilities``, the code every other ensemble uses.
"""

from __future__ import annotations

from typing import Any

import torch

from ablate.training.scoring import average_probabilities, classification_metrics, named

Outputs = dict[str, torch.Tensor]  # variant suffix ("", "mc", "tta") -> (N, classes) log-probabilities


def ensemble_probs(log_probs: list[torch.Tensor], space: str) -> torch.Tensor:
    """Probabilities of the ensemble: mean of softmax outputs (prob) or softmax of the mean logits (logit)."""
    if space == "prob":
        return average_probabilities([lp.exp() for lp in log_probs])
    return average_probabilities(log_probs, space="logit")  # mean log-softmax = mean logits up to a row constant


def score(probs: torch.Tensor, targets: torch.Tensor, num_classes: int, variant: str) -> tuple[dict, dict]:
    metrics = classification_metrics(probs, targets, num_classes)
    per_class = metrics.pop("acc_per_class")
    return named(metrics, "test", variant), {f"test/acc{'_' + variant if variant else ''}": per_class}


def member_scores(outputs: Outputs, targets: torch.Tensor, num_classes: int) -> tuple[dict, dict]:
    """One member's metrics and per-class accuracies, every variant."""
    metrics: dict[str, Any] = {}
    per_class: dict[str, Any] = {}
    for variant, log_probs in outputs.items():
        scored, classes = score(log_probs.exp(), targets, num_classes, variant)
        metrics.update(scored)
        per_class.update(classes)
    return metrics, per_class


def ensemble_scores(
    predictions: list[Outputs], targets: torch.Tensor, num_classes: int, space: str
) -> tuple[dict, dict, list[dict]]:
    """The ensemble's metrics and per-class accuracies, and its size curve: the first k members (validation order,
    best first) for k = 1..n."""
    variants = list(predictions[0])
    metrics: dict[str, Any] = {}
    per_class: dict[str, Any] = {}
    for variant in variants:
        probs = ensemble_probs([p[variant] for p in predictions], space)
        scored, classes = score(probs, targets, num_classes, variant)
        metrics.update(scored)
        per_class.update(classes)
    curve = []
    for k in range(1, len(predictions) + 1):
        point: dict[str, Any] = {"members": k}
        for variant in variants:
            probs = ensemble_probs([p[variant] for p in predictions[:k]], space)
            point.update(score(probs, targets, num_classes, variant)[0])
        curve.append(point)
    return metrics, per_class, curve
