"""A signal in the middle of an epoch: ``last.ckpt`` holds the state after the last step, and resuming from it ends
with exactly the uninterrupted run's metrics (same batches, same random numbers, same running statistics)."""

from __future__ import annotations

import csv
import hashlib
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch

from ablate.runtime import interrupt
from ablate.runtime.interrupt import RunInterrupted
from ablate.runtime.job import train
from ablate.training import mid_epoch
from ablate.training.checkpoint_io import verify

# 256 train images / batch 32 = 8 batches per epoch; augmentation, dropout and an EMA all draw on or carry state.
ARGS = ["model=mlp", "reg=dropout", "aug=flip_crop", "ensemble=ema", "trainer.max_epochs=3", "scheduler=step"]
COMPARED = ("test/acc", "test/loss", "val/acc_best", "val/loss", "train/loss", "train/acc", "test/acc_ema")


class SignalAt(L.Callback):
    """Sends a real SIGINT to this process at the end of one training batch (the handler notes it, as on Ctrl-C)."""

    def __init__(self, epoch: int, batch: int, checkpoints: Path) -> None:
        self.epoch, self.batch, self.checkpoints = epoch, batch, checkpoints
        self.files_at_signal: dict[str, str] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            self.files_at_signal = _hashes(self.checkpoints)
            os.kill(os.getpid(), signal.SIGINT)


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def _interrupt_at(cfg, epoch: int, batch: int) -> tuple[Path, SignalAt]:
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    trigger = SignalAt(epoch, batch, checkpoints)
    previous = interrupt.install()
    try:
        with pytest.raises(RunInterrupted) as stopped:
            train(cfg, extra_callbacks=[trigger])
    finally:
        interrupt.restore(previous)
        interrupt.STATE.pending, interrupt.STATE.in_job = None, False
    assert stopped.value.exit_code == 130
    return checkpoints / "last.ckpt", trigger


def _history(run: Path) -> list[list[str]]:
    """history.csv without its wall-clock column: per-epoch train/val metrics and learning rates."""
    with (run / "history.csv").open(newline="") as f:
        return [[v for k, v in row.items() if k != "time"] for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    from tests.conftest import compose_config

    run = tmp_path_factory.mktemp("straight") / "run"
    return {**train(compose_config(ARGS, run))["metrics"], "history": _history(run)}


def test_a_run_stopped_mid_epoch_resumes_to_the_uninterrupted_metrics(make_cfg, straight):
    cfg = make_cfg(*ARGS)
    last, trigger = _interrupt_at(cfg, epoch=1, batch=2)

    verify(last)  # written through AtomicCheckpointIO, with its checksum
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 8 + 3  # epoch 0's 8 steps, then batches 0..2 of epoch 1
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 3}]
    assert "ablate_mid_epoch" in checkpoint
    # Only last.ckpt (and its checksum) changed since the signal: the best checkpoint is untouched.
    after = _hashes(last.parent)
    changed = {name for name in after if after[name] != trigger.files_at_signal.get(name)}
    assert changed == {"last.ckpt", "last.ckpt.sha256"} and set(after) == set(trigger.files_at_signal)

    resumed = train(cfg, ckpt_path=str(last))
    for key in COMPARED:
        assert resumed["metrics"][key] == straight[key], key
    assert resumed["global_step"] == 24
    # Every epoch's row, the interrupted epoch's train/loss and train/acc included (its statistics were carried).
    assert _history(Path(cfg.paths.output_dir)) == straight["history"]
    assert "ablate_mid_epoch" not in torch.load(last, weights_only=True)  # rewritten at the end of the last epoch


def test_without_restoring_the_rng_the_resumed_run_differs(make_cfg, straight, monkeypatch):
    """The control: the test above fails when the RNG state is not carried across the stop."""
    cfg = make_cfg(*ARGS)
    last, _ = _interrupt_at(cfg, epoch=1, batch=2)
    monkeypatch.setattr(mid_epoch, "restore_rng", lambda module, state: None)
    resumed = train(cfg, ckpt_path=str(last))
    assert resumed["metrics"]["train/loss"] != straight["train/loss"]
    assert resumed["metrics"]["test/acc"] != straight["test/acc"]


def test_a_signal_inside_an_accumulation_window_stops_at_its_end(make_cfg):
    cfg = make_cfg("model=mlp", "trainer.max_epochs=2", "trainer.accumulate_grad_batches=2")
    last, _ = _interrupt_at(cfg, epoch=1, batch=2)  # the third batch of a window of two: stop after the fourth
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 4 + 2
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 4}]


def test_a_signal_in_the_last_batch_of_an_epoch_stops_after_its_checkpoint(make_cfg):
    cfg = make_cfg("model=mlp", "trainer.max_epochs=3")
    last, _ = _interrupt_at(cfg, epoch=1, batch=7)  # the epoch's validation and last.ckpt come first
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 16 and checkpoint["epoch"] == 1 and "ablate_mid_epoch" not in checkpoint


def test_the_loader_resumes_its_epoch_after_the_batches_already_yielded():
    from ablate.data.loader import InMemoryLoader

    def loader() -> InMemoryLoader:
        return InMemoryLoader(torch.arange(50).reshape(50, 1), torch.arange(50), batch_size=8, shuffle=True, seed=3)

    full = loader()
    full.sampler.set_epoch(2)
    batches = [y.tolist() for _, y in full]
    it = iter(full)
    for _ in range(3):
        next(it)
    assert full.state_dict() == {"epoch": 2, "batches": 3}

    resumed = loader()
    resumed.load_state_dict(full.state_dict())
    resumed.sampler.set_epoch(2)  # Lightning sets the epoch after the restore, before the first batch
    assert [y.tolist() for _, y in resumed] == batches[3:]
    assert [y.tolist() for _, y in resumed] == batches  # the skip applies to the resumed epoch's pass only

    other = loader()
    other.load_state_dict({"epoch": 1, "batches": 3})  # a position in another epoch does not apply
    other.sampler.set_epoch(2)
    assert [y.tolist() for _, y in other] == batches
