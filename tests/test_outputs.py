"""What a run leaves behind: checkpoints that load with weights_only, and each logger's files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from ablate.runtime.job import train


def test_checkpoints_load_with_weights_only_and_carry_plain_config(make_cfg):
    summary = train(make_cfg("model=resnet", "scheduler=cosine", "optimizer=nesterov"))
    for key in ("checkpoint_last", "checkpoint_best"):
        checkpoint = torch.load(summary[key], map_location="cpu", weights_only=True)
        assert checkpoint["ablate_config"]["model"]["depth"] == 20
        assert "model.head.2.weight" in checkpoint["state_dict"]
        assert "mean" in checkpoint["state_dict"] and "val_acc_best" in checkpoint["state_dict"]


def test_csv_logger_writes_epoch_metrics_and_results_the_final_lr(make_cfg):
    cfg = make_cfg("trainer.max_epochs=2", "optimizer=sgd", "scheduler=exponential")
    summary = train(cfg)
    header, *rows = (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").read_text().splitlines()
    for name in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/acc", "lr-SGD/pg1"):
        assert name in header.split(",")
    assert len(rows) < 12  # logged per epoch, not per step
    # LearningRateMonitor logs at each epoch's start (lr0 * 0.7 in epoch 2); the final LR is after 2 decays.
    assert not [k for k in summary["metrics"] if k.startswith("lr-")]
    assert summary["lr_final"]["SGD/pg1"] == pytest.approx(cfg.optimizer.lr * 0.7**2)


def test_wandb_runs_offline_and_writes_run_files(make_cfg, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg("logger=wandb")
    train(cfg)
    import wandb

    wandb.finish()
    # W&B's service process flushes the offline log asynchronously: on a loaded machine the records can land a few
    # seconds after finish() returns, so wait for them (bounded) instead of reading once.
    records, deadline = b"", time.monotonic() + 60
    while b"ablate.models.ConvNet" not in records and time.monotonic() < deadline:
        time.sleep(0.5)
        runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
        assert len(runs) <= 1
        run_files = list(runs[0].glob("run-*.wandb")) if runs else []
        records = run_files[0].read_bytes() if run_files else b""  # the offline record log that `wandb sync` uploads
    assert b"ablate.models.ConvNet" in records and b"${" not in records  # resolved config reached W&B


def test_wandb_goes_online_only_with_a_key(monkeypatch):
    from ablate.runtime.loggers import wandb_logger

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_logger(project="x")._offline
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert not wandb_logger(project="x")._offline
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_logger(project="x")._offline


def test_tensorboard_writes_event_files(make_cfg):
    cfg = make_cfg("logger=tensorboard")
    train(cfg)
    assert list((Path(cfg.paths.output_dir) / "tensorboard").rglob("events.out.tfevents.*"))
    assert (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").is_file()  # CSV stays on


def test_progress_bar_does_its_per_batch_work_only_every_refresh_rate_batches(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import RichProgressBar
    from omegaconf import open_dict

    from tests.conftest import compose_config

    calls: list[int] = []
    original = RichProgressBar.on_train_batch_end

    def counting(self, trainer, pl_module, outputs, batch, batch_idx):
        calls.append(batch_idx)
        original(self, trainer, pl_module, outputs, batch, batch_idx)

    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", counting)
    cfg = compose_config(["model=mlp"], tmp_path / "bar")  # FAST drops the bar: put it back
    with open_dict(cfg):
        cfg.callbacks.progress_bar = {
            "_target_": "ablate.training.callbacks.ThrottledRichProgressBar",
            "refresh_rate": 3,
        }
    train(cfg)
    assert calls == [2, 5, 7]  # 8 batches: every 3rd, and the last so the bar ends at 100%
