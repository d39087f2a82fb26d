"""Every step's learning rate, recorded during real training, against each schedule's closed form."""

from __future__ import annotations

import math

import lightning as L
import pytest

from ablate.runtime.job import train
from tests.conftest import snapshot_alpha

BASE_LR = 0.1
EPOCHS = 3
STEPS_PER_EPOCH = 8  # 256 training images / batch 32


class LRRecorder(L.Callback):
    """Records the LR used by each optimizer step (read before the step, after the previous scheduler step)."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def record_lrs(make_cfg, monkeypatch, *overrides: str) -> list[float]:
    recorder = LRRecorder()
    cfg = make_cfg(
        "model=mlp",
        "optimizer=sgd",
        f"optimizer.lr={BASE_LR}",
        f"trainer.max_epochs={EPOCHS}",
        "data.val_size=64",
        *overrides,
    )
    train(cfg, extra_callbacks=[recorder])
    assert len(recorder.lrs) == EPOCHS * STEPS_PER_EPOCH
    return recorder.lrs


T = EPOCHS * STEPS_PER_EPOCH


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["scheduler=none"], lambda t: BASE_LR),
        (
            ["scheduler=step", "scheduler.fn.step_size=1", "scheduler.fn.gamma=0.5"],
            lambda t: BASE_LR * 0.5 ** ((t - 1) // STEPS_PER_EPOCH),
        ),
        (
            ["scheduler=multistep", "scheduler.fn.milestones=[2]", "scheduler.fn.gamma=0.1"],
            lambda t: BASE_LR * (0.1 if (t - 1) // STEPS_PER_EPOCH >= 2 else 1.0),
        ),
        (
            ["scheduler=multistep_fraction", "scheduler.fn.fractions=[0.34,0.67]"],
            lambda t: BASE_LR * 0.1 ** ((t - 1) // STEPS_PER_EPOCH),
        ),
        (["scheduler=exponential", "scheduler.fn.gamma=0.7"], lambda t: BASE_LR * 0.7 ** ((t - 1) // STEPS_PER_EPOCH)),
        (["scheduler=cosine"], lambda t: BASE_LR / 2 * (1 + math.cos(math.pi * (t - 1) / T))),
        (["scheduler=snapshot", "scheduler.fn.cycles=3"], lambda t: snapshot_alpha(t, T, 3, BASE_LR)),
        (["scheduler=snapshot", "scheduler.fn.cycles=5"], lambda t: snapshot_alpha(t, T, 5, BASE_LR)),
        (["scheduler=snapshot", "scheduler.fn.cycles=7"], lambda t: snapshot_alpha(t, T, 7, BASE_LR)),  # 4,4,4,3,3,3,3
        (
            ["scheduler=cyclic", "scheduler.fn.base_lr=0.01", "scheduler.fn.step_size_up=5"],
            lambda t: 0.01 + (BASE_LR - 0.01) * max(0.0, 1 - abs((t - 1) / 5 - 2 * math.floor(1 + (t - 1) / 10) + 1)),
        ),
        (
            ["scheduler=warmup_cosine", "scheduler.fn.warmup_fraction=0.25", "scheduler.fn.start_factor=0.1"],
            lambda t: (
                BASE_LR * (0.1 + 0.9 * (t - 1) / 6)
                if t <= 6
                else BASE_LR / 2 * (1 + math.cos(math.pi * (t - 7) / (T - 6)))
            ),
        ),
    ],
    ids=[
        "none",
        "step",
        "multistep",
        "multistep_fraction",
        "exponential",
        "cosine",
        "snapshot3",
        "snapshot5",
        "snapshot7_uneven",
        "cyclic",
        "warmup_cosine",
    ],
)
def test_lr_follows_closed_form(make_cfg, monkeypatch, overrides, expected):
    lrs = record_lrs(make_cfg, monkeypatch, *overrides)
    for t, lr in enumerate(lrs, start=1):
        assert lr == pytest.approx(expected(t), rel=1e-6, abs=1e-9), f"step {t}"


def test_onecycle_peaks_at_max_lr_then_anneals(make_cfg, monkeypatch):
    lrs = record_lrs(make_cfg, monkeypatch, "scheduler=onecycle", "scheduler.fn.pct_start=0.25")
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(BASE_LR)
    assert peak == round(0.25 * T) - 1  # torch: the warm-up phase ends at step pct_start * T - 1
    assert lrs[0] == pytest.approx(BASE_LR / 25)  # div_factor 25
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :], strict=False))


def test_snapshot_restarts_exactly_cycles_times(make_cfg, monkeypatch):
    lrs = record_lrs(make_cfg, monkeypatch, "scheduler=snapshot", "scheduler.fn.cycles=4")
    restarts = [t for t in range(1, len(lrs)) if lrs[t] > lrs[t - 1]]
    assert len(restarts) == 3 and lrs[0] == pytest.approx(BASE_LR)


@pytest.mark.parametrize("monitor", ["val/loss", "train/loss"])
def test_plateau_reduces_on_a_stalled_loss(make_cfg, monkeypatch, monitor):
    # An LR of 1e-9 cannot improve the loss by the default relative threshold (1e-4): epoch 0 sets the best,
    # epoch 1 is a bad epoch, and with patience 0 the LR is divided by 10 before epoch 2. eps=0 because torch
    # ignores LR changes smaller than eps (1e-8 by default). The module steps it after validation (val/*) or at
    # the end of the training epoch (train/*).
    lrs = record_lrs(
        make_cfg,
        monkeypatch,
        "scheduler=plateau",
        f"scheduler.monitor={monitor}",
        "scheduler.fn.patience=0",
        "+scheduler.fn.eps=0",
        "optimizer.lr=1e-9",
    )
    per_epoch = lrs[::STEPS_PER_EPOCH]
    assert per_epoch == [pytest.approx(1e-9), pytest.approx(1e-9), pytest.approx(1e-10)]


@pytest.mark.parametrize(
    ("optimizer", "key"),
    [("adamw", "betas"), ("adam", "betas"), ("momentum", "momentum"), ("nesterov", "momentum"), ("sgd", None)],
)
def test_onecycle_cycles_momentum_or_beta1_inversely_to_the_lr(tmp_path, optimizer, key):
    """Smith & Topin 2019 (torch's OneCycleLR cycle_momentum): momentum / beta1 goes from max_momentum down to
    base_momentum at the LR's peak and back; plain SGD (momentum 0) keeps its momentum off."""
    import torch
    from hydra.utils import instantiate

    from ablate.build.finetune import pop_backbone_lr_scale
    from ablate.optim import build_scheduler
    from tests.conftest import compose_config

    cfg = compose_config([f"optimizer={optimizer}", "scheduler=onecycle"], tmp_path)
    node, _ = pop_backbone_lr_scale(cfg.optimizer)
    opt = instantiate(node)([torch.nn.Parameter(torch.zeros(2))])
    scheduler = build_scheduler(instantiate(cfg.scheduler.fn), opt, "step", steps=40, epochs=1)
    lrs, momenta = [], []
    for _ in range(40):
        group = opt.param_groups[0]
        lrs.append(group["lr"])
        momenta.append(group["betas"][0] if key == "betas" else group.get("momentum", 0.0))
        opt.step()
        scheduler.step()
    if key is None:
        assert set(momenta) == {0.0}
        return
    peak = lrs.index(max(lrs))
    assert momenta[0] == pytest.approx(0.95) and momenta[peak] == pytest.approx(0.85)
    assert momenta[-1] == pytest.approx(0.95, abs=1e-3)
    assert min(momenta) == pytest.approx(0.85)
