"""The shared scorer: torchmetrics-backed metrics of probabilities, and probability averaging."""

from __future__ import annotations

import math

import pytest
import torch

from ablate.training.scoring import average_probabilities, classification_metrics, named, predict


def test_metrics_of_a_known_prediction() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    targets = torch.tensor([0, 1, 1, 1])
    m = classification_metrics(probs, targets, num_classes=2)
    assert m["acc"] == pytest.approx(0.75)
    assert m["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.7)) / 4, rel=1e-5)
    assert m["acc_per_class"] == pytest.approx([1.0, 2 / 3], abs=1e-6)
    assert "acc_top5" not in m  # only with more than 5 classes
    # ECE by hand with 15 equal-width bins: confidences 0.9, 0.8, 0.6, 0.7 fall in four different bins.
    conf, correct = [0.9, 0.8, 0.6, 0.7], [1, 1, 0, 1]
    assert m["ece"] == pytest.approx(sum(abs(c - k) for c, k in zip(conf, correct, strict=True)) / 4, abs=1e-6)


def test_top5_with_many_classes() -> None:
    torch.manual_seed(0)
    probs = torch.rand(50, 10).softmax(1)
    targets = torch.randint(0, 10, (50,))
    m = classification_metrics(probs, targets, num_classes=10)
    top5 = (probs.topk(5, dim=1).indices == targets[:, None]).any(1).float().mean()
    assert m["acc_top5"] == pytest.approx(float(top5))
    assert m["acc_top5"] >= m["acc"]


def test_ensemble_of_identical_members_equals_the_member() -> None:
    probs = torch.rand(20, 4).softmax(1)
    assert torch.allclose(average_probabilities([probs, probs, probs]), probs)


def test_averaging_is_over_probabilities_not_logits() -> None:
    a, b = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    prob_avg = average_probabilities([a.softmax(1), b.softmax(1)])
    logit_avg = average_probabilities([a, b], space="logit")
    assert torch.allclose(prob_avg, (a.softmax(1) + b.softmax(1)) / 2)
    assert torch.allclose(logit_avg, ((a + b) / 2).softmax(1))
    assert not torch.allclose(prob_avg, logit_avg)


def test_named_and_predict() -> None:
    assert named({"acc": 0.5}, "test", "ema") == {"test/acc_ema": 0.5}
    assert named({"acc": 0.5}, "val") == {"val/acc": 0.5}
    model = torch.nn.Linear(3, 2)
    batches = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1])) for _ in range(2)]
    probs, targets = predict(model.eval(), batches)
    assert probs.shape == (8, 2) and targets.tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert torch.allclose(probs.sum(1), torch.ones(8))


def test_module_normalize_matches_the_eval_batch_path(make_cfg) -> None:
    from ablate.training.module import ClassifierModule
    from ablate.training.module_config import Network

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    module = ClassifierModule(Network(model, mean=torch.tensor([0.5]), std=torch.tensor([0.25])))
    images = torch.randint(0, 256, (3, 1, 2, 6), dtype=torch.uint8)
    expected = (images.float() / 255 - 0.5) / 0.25
    assert torch.allclose(module.normalize(images), expected)
