"""history.csv: one row per epoch (epoch, train/loss, train/acc, val/loss, val/acc, lr, time), ready to plot.

Lightning's CSVLogger writes one sparse row per logging call (train and val metrics on different lines, columns in
whatever order they first appeared), which needs pivoting before it can be plotted. This callback writes the dense
table the report code (``python -m ablate.table --curves``) and notebooks read. Lightning has no such callback.

- ``epoch`` is Lightning's 0-based epoch; ``lr`` the first parameter group's learning rate at the end of the epoch;
  ``time`` the seconds of training so far (carried across a resume); a metric the run does not have is an empty cell.
- Rank zero only; one append + flush per epoch, so a killed run keeps the rows of the epochs it finished.
- On resume, rows of epochs at or after the restored epoch are dropped first, so the file never repeats an epoch.

Ordering: Lightning calls callbacks' ``on_train_epoch_end`` before the module's, where the module logs its train/*
metrics. So the row is started there (val/*, lr, time) and completed at the next hook that sees the train metrics:
the checkpoint written at the end of the epoch, the next epoch's start, or the end of training.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import lightning as L

COLUMNS = ("epoch", "train/loss", "train/acc", "val/loss", "val/acc", "lr", "time")
TRAIN_COLUMNS = ("train/loss", "train/acc")


class History(L.Callback):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pending: dict[str, Any] | None = None
        self._elapsed_before = 0.0  # training seconds of earlier segments of a resumed run
        self._started = 0.0

    # -- state carried in checkpoints, so time keeps counting across a resume --
    def state_dict(self) -> dict[str, Any]:
        return {"elapsed_s": self._elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._elapsed_before = float(state_dict.get("elapsed_s", 0.0))

    def _elapsed(self) -> float:
        return self._elapsed_before + (time.monotonic() - self._started if self._started else 0.0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.monotonic()
        if trainer.is_global_zero:
            self._truncate(trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "time": round(self._elapsed(), 3)}
        for name in ("val/loss", "val/acc"):
            row[name] = float(metrics[name]) if name in metrics else ""
        optimizers = trainer.optimizers
        row["lr"] = optimizers[0].param_groups[0]["lr"] if optimizers else ""
        self._pending = row

    def _flush(self, trainer: L.Trainer, train_metrics_ready: bool = True) -> None:
        if self._pending is None:
            return
        row, self._pending = self._pending, None
        metrics = trainer.callback_metrics
        for name in TRAIN_COLUMNS:  # unknown when training stopped inside the module's epoch end (e.g. NaN loss)
            row[name] = float(metrics[name]) if train_metrics_ready and name in metrics else ""
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k, "") for k in COLUMNS})
            f.flush()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.is_global_zero:
            self._flush(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._flush(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._flush(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero:
            self._flush(trainer, train_metrics_ready=False)

    def _truncate(self, first_epoch: int) -> None:
        """Keep only rows of epochs before ``first_epoch`` (the epoch training starts from)."""
        if not self.path.is_file():
            return
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("epoch", "").isdigit() and int(r["epoch"]) < first_epoch]
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)
