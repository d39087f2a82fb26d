"""train/acc_eval: the final weights in eval mode on the training split, so the table's gap means what it says."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from ablate.runtime.job import train
from ablate.training.train_eval import eval_mode_train_metrics


def _fake(p_drop: float) -> tuple[SimpleNamespace, SimpleNamespace]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(p_drop), nn.Linear(32, 3))
    module = SimpleNamespace(model=model, mean=torch.zeros(1), eval_repeats=1, normalize=lambda x: x.float() / 255)
    x = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8)
    data = SimpleNamespace(x_train=x, y_train=torch.randint(0, 3, (50,)), eval_batch_size=16)
    return module, data


def test_eval_mode_scores_without_masks_restores_the_mode_and_leaves_the_rngs_alone():
    module, data = _fake(p_drop=0.9)  # training-mode outputs would differ from pass to pass
    module.model.train()
    rng_before = torch.get_rng_state()
    first = eval_mode_train_metrics(module, data)
    assert torch.equal(torch.get_rng_state(), rng_before)  # later test passes / ensembles see the same draws
    assert module.model.training  # the mode it came in with
    assert eval_mode_train_metrics(module, data) == first  # deterministic: dropout off
    with torch.no_grad():
        module.model.eval()
        logits = module.model(data.x_train.float() / 255)
    expected_acc = float((logits.argmax(1) == data.y_train).float().mean())
    expected_nll = float(nn.functional.cross_entropy(logits, data.y_train))
    assert abs(first["train/acc_eval"] - expected_acc) < 1e-6
    assert abs(first["train/nll_eval"] - expected_nll) < 1e-4


def test_every_run_records_the_eval_mode_training_accuracy(make_cfg):
    cfg = make_cfg("trainer.max_epochs=2", "reg=dropout")
    metrics = train(cfg)["metrics"]
    assert 0.0 <= metrics["train/acc_eval"] <= 1.0 and metrics["train/nll_eval"] > 0
    assert metrics["train/acc_eval"] != metrics["train/acc"]  # training-mode running accuracy is another number


def test_a_run_cut_to_a_few_batches_scores_only_as_many_training_images(make_cfg, monkeypatch):
    import ablate.runtime.outcome as outcome

    seen: list[int | None] = []
    real = outcome.eval_mode_train_metrics
    monkeypatch.setattr(outcome, "eval_mode_train_metrics", lambda m, d, n=None: seen.append(n) or real(m, d, n))
    train(make_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=2", "data.batch_size=16"))
    assert seen == [32]
