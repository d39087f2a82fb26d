"""Callbacks that Lightning lacks in the form we need."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import lightning as L
from lightning.pytorch import callbacks
from lightning.pytorch.callbacks import RichProgressBar


class ModelCheckpoint(callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint with its ``state_key`` computed once instead of on every hook call.

    Lightning formats ``callback.state_key`` for each callback on every hook dispatch (several per training step);
    ModelCheckpoint's builds a repr of its settings each time (~4 us). Its settings never change after __init__, and
    the class keeps Lightning's name, so the key, and checkpoints, stay exactly Lightning's.
    """

    @cached_property
    def state_key(self) -> str:  # type: ignore[override]
        return super().state_key


class ThrottledRichProgressBar(RichProgressBar):
    """Lightning's RichProgressBar with its per-batch work actually limited to every ``refresh_rate`` batches.

    Lightning's version gates only the bar's position by ``refresh_rate``; it still gathers the progress-bar
    metrics and asks Rich to refresh after every training batch, which measured as a visible share of a small
    model's step (experiments/throughput). The bar's position is absolute, so skipping batches loses nothing.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        done = batch_idx + 1
        if done % max(int(self.refresh_rate), 1) == 0 or done == self.total_train_batches:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
