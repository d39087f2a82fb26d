"""Callbacks that Lightning lacks in the form we need."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch import callbacks
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import ProcessingSpeedColumn

from ablate.config import metric_registry
from ablate.training.lightning_fast import LastEveryEpoch


def monitor_mode(monitor: str | None, mode: str | None) -> str:
    """``mode`` as given, else the monitor's direction from the metric registry (unknown metric: ConfigError)."""
    if mode is not None:
        return mode
    return metric_registry.mode(monitor) if monitor else "min"  # no monitor: Lightning's default, unused


class ModelCheckpoint(LastEveryEpoch):
    """Lightning's ModelCheckpoint with its ``state_key`` computed once instead of on every hook call.

    Lightning formats ``callback.state_key`` for each callback on every hook dispatch (several per training step);
    ModelCheckpoint's builds a repr of its settings each time (~4 us). Its settings never change after __init__, and
    the class keeps Lightning's name, so the key, and checkpoints, stay exactly Lightning's.


    Two fixes on top:

    - ``last.ckpt`` after every epoch, and ``write_last``, which ablate.runtime.interrupt calls to save it mid-epoch
      when a signal stops training (``LastEveryEpoch``, in ablate.training.lightning_fast with Lightning's other
      internals).
    - A run continued in a new folder (``ckpt_path`` into a finished run) gets copies of that run's checkpoints;
      ``load_state_dict`` maps the saved paths onto the new folder, so "best" keeps meaning best over the whole run
      and nothing in the old folder is ever touched or deleted.
    """

    def __init__(self, *args: Any, monitor: str | None = None, mode: str | None = None, **kwargs: Any) -> None:
        # mode null (configs/callbacks/default.yaml): the monitor's direction, so "best" follows the metric
        super().__init__(*args, monitor=monitor, mode=monitor_mode(monitor, mode), **kwargs)

    @cached_property
    def state_key(self) -> str:  # type: ignore[override]
        return super().state_key

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:
            moved = lambda p: str(Path(new) / Path(p).name) if isinstance(p, str) and p.startswith(old) else p
            state_dict = {k: moved(v) for k, v in state_dict.items()}
            state_dict["best_k_models"] = {moved(k): v for k, v in (state_dict.get("best_k_models") or {}).items()}
            state_dict["dirpath"] = new
        super().load_state_dict(state_dict)


class EarlyStopping(callbacks.EarlyStopping):
    """Lightning's EarlyStopping with ``mode`` null meaning the monitor's direction (ablate.config.metric_registry)."""

    def __init__(self, monitor: str, mode: str | None = None, **kwargs: Any) -> None:
        super().__init__(monitor=monitor, mode=monitor_mode(monitor, mode), **kwargs)


class _MeanSpeedColumn(ProcessingSpeedColumn):
    """Batches per second since the bar (re)started: Rich's own estimate needs several updates inside its window
    and showed 0.00it/s for an epoch shorter than the refresh interval."""

    def render(self, task: Any) -> Any:
        from rich.text import Text

        elapsed = task.finished_time or task.elapsed  # finished: stop the clock (validation runs after)
        speed = task.completed / elapsed if elapsed else 0.0
        return Text(f"{speed:>.2f}it/s", style=self.style)


class ThrottledRichProgressBar(RichProgressBar):
    """Lightning's RichProgressBar with its per-batch work actually limited to every ``refresh_rate`` batches.

    Lightning's version gates only the bar's position by ``refresh_rate``; it still gathers the progress-bar
    metrics and asks Rich to refresh after every training batch, which measured as a visible share of a small
    model's step (experiments/throughput). The bar's position is absolute, so skipping batches loses nothing.

    It also shows the real mean it/s and the epoch's running training loss. The loss is summed on the device
    (module.train_stats); reading it costs one sync, which happens only at a redraw, never per step.
    """

    _running_loss: float | None = None

    def configure_columns(self, trainer: L.Trainer) -> list:
        columns = super().configure_columns(trainer)
        return [_MeanSpeedColumn(c.style) if isinstance(c, ProcessingSpeedColumn) else c for c in columns]

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        # Lightning adds the logger's version; W&B's is a random run id that wraps the bar's metrics column, and the
        # run folder already names the run.
        metrics.pop("v_num", None)
        stats = getattr(pl_module, "train_stats", None)
        if trainer.training and stats is not None and not trainer.sanity_checking:
            loss = stats.compute()["loss"]  # the one device sync, at the bar's refresh interval
            self._running_loss = loss if stats.count.item() else self._running_loss
        if self._running_loss is not None:
            metrics = {"loss": f"{self._running_loss:.3g}", **metrics}
        return metrics

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        done = batch_idx + 1
        if done % max(int(self.refresh_rate), 1) == 0 or done == self.total_train_batches:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class RichModelSummary(callbacks.RichModelSummary):
    """Lightning's RichModelSummary without the FLOPs column and total when Lightning counted none.

    Lightning counts FLOPs only by running ``example_input_array`` through the module, which our modules do not
    define (their batches are (images, labels) pairs normalised on the device), so the column was all zeros.
    ``enabled`` follows ``trainer.enable_model_summary`` (configs/callbacks/default.yaml), as Lightning's own would.
    """

    def __init__(self, max_depth: int = 1, enabled: bool = True, **summarize_kwargs: Any) -> None:
        super().__init__(max_depth, **summarize_kwargs)
        self.enabled = enabled

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled:
            super().on_fit_start(trainer, pl_module)

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if total_flops:
            callbacks.RichModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
            return
        from lightning.pytorch.utilities.model_summary.model_summary import (
            get_formatted_model_size,
            get_human_readable_count,
        )
        from rich import get_console
        from rich.table import Table

        data = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in data:
            right = name not in ("Name", "Type", "Mode")
            table.add_column(name, justify="right" if right else "left", style="dim" if name == " " else None)
        for row in zip(*(values for _, values in data), strict=True):
            table.add_row(*row)
        totals = Table.grid(expand=True)
        totals.add_column()
        for label, value in (
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            ("Non-trainable params", get_human_readable_count(int(total_parameters - trainable_parameters))),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
        ):
            totals.add_row(f"[bold]{label}[/]: {value}")
        console = get_console()
        console.print(table)
        console.print(totals)


class OptunaPruning(L.Callback):
    """Reports a search trial's validation curve to Optuna and stops the run when the study's pruner says so.

    ``trial`` (JSON: study, storage, trial_id, pruner_kwargs) comes from the ABLATE_OPTUNA_TRIAL environment variable,
    which the ablate_optuna sweeper sets per job (``hydra.job.env_set``) when ``hydra.sweeper.pruner`` is set; without
    it the callback does nothing. After each validation epoch it reports ``monitor`` (``${optimized_metric}`` in
    configs/hparams_search/random.yaml) as the trial's intermediate value and asks the pruner (median rule: stop when
    this epoch's value is worse than the median of earlier trials at the same epoch, "worse" in the study's direction,
    which the sweeper took from ablate.config.metric_registry). A pruned run stops like an early-stopped one and keeps
    its results.json; the sweeper reads ``pruned_at_epoch`` from the trial and tells it PRUNED. optuna-integration's
    PyTorchLightningPruningCallback needs the Trial object of the sweeper's process; this one reattaches to the
    stored trial instead. Single-process runs only (under DDP only rank 0 would stop).
    """

    def __init__(self, trial: dict[str, Any] | str | None = None, monitor: str = "val/acc_best") -> None:
        import json

        self.trial_info = json.loads(trial) if isinstance(trial, str) and trial else trial or None
        self.monitor = monitor
        self._trial: Any = None

    def _attach(self) -> Any:
        if self._trial is None:
            import optuna

            info = self.trial_info or {}
            pruner = optuna.pruners.MedianPruner(**dict(info.get("pruner_kwargs") or {}))
            study = optuna.load_study(study_name=info["study"], storage=info["storage"], pruner=pruner)
            self._trial = optuna.trial.Trial(study, int(info["trial_id"]))
        return self._trial

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if not self.trial_info or trainer.sanity_checking or value is None:
            return
        trial = self._attach()
        trial.report(float(value), step=trainer.current_epoch)
        if trial.should_prune():
            trial.set_user_attr("pruned_at_epoch", trainer.current_epoch)
            trainer.should_stop = True
