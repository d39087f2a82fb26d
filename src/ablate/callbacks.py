"""Callbacks that Lightning lacks in the form we need."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch import callbacks
from lightning.pytorch.callbacks import RichProgressBar


class ModelCheckpoint(callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint with its ``state_key`` computed once instead of on every hook call.

    Lightning formats ``callback.state_key`` for each callback on every hook dispatch (several per training step);
    ModelCheckpoint's builds a repr of its settings each time (~4 us). Its settings never change after __init__, and
    the class keeps Lightning's name, so the key, and checkpoints, stay exactly Lightning's.


    Two fixes on top, both through Lightning's own saving methods:

    - ``last.ckpt`` after every epoch. Lightning 2.6 rewrites it only in steps where a top-k checkpoint was also
      saved, so after an epoch that did not improve the monitored metric, ``last.ckpt`` held an older epoch (and a
      resume re-trained it). It is now written where Lightning writes it in an improving epoch (validation end, or
      train epoch end without validation), whatever the metric did.
    - A run continued in a new folder (``ckpt_path`` into a finished run) gets copies of that run's checkpoints;
      ``load_state_dict`` maps the saved paths onto the new folder, so "best" keeps meaning best over the whole run
      and nothing in the old folder is ever touched or deleted.
    """

    _last_written_step = -1

    @cached_property
    def state_key(self) -> str:  # type: ignore[override]
        return super().state_key

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_written_step = trainer.global_step

    def _save_last_now(self, trainer: L.Trainer) -> None:
        if not self.save_last or self._last_written_step == trainer.global_step:
            return
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_now(trainer)  # also the epochs without validation (check_val_every_n_epoch > 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:
            moved = lambda p: str(Path(new) / Path(p).name) if isinstance(p, str) and p.startswith(old) else p
            state_dict = {k: moved(v) for k, v in state_dict.items()}
            state_dict["best_k_models"] = {moved(k): v for k, v in (state_dict.get("best_k_models") or {}).items()}
            state_dict["dirpath"] = new
        super().load_state_dict(state_dict)


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
