"""Weight averaging inside one run: EMA (Polyak averaging) and SWA (Izmailov et al. 2018).

Built on Lightning's ``WeightAveraging`` / ``EMAWeightAveraging`` (their update rules: when to update, per optimizer
step, which also holds under our manual optimization and gradient accumulation since ``trainer.global_step`` counts
optimizer steps) and ``torch.optim.swa_utils`` (``AveragedModel``, the EMA/SWA averaging functions, ``update_bn``).

What differs from Lightning's callbacks, on purpose:

* Lightning swaps the averaged weights into the module for validation and copies them in at the end of training,
  and writes them as the checkpoint's ``state_dict``. Here the module always holds the **raw** weights: ``val/acc``,
  ``test/acc`` and the checkpoints' ``state_dict`` are the raw model's, and the averaged model is scored beside it
  (``val/acc_ema``, ``test/acc_ema``, ...). Its weights travel in the callback's checkpoint state (tensors only, so
  checkpoints still load with ``torch.load(weights_only=True)``), which also makes resume continue the average.
* Only the classifier (``pl_module.model``) is averaged, not the LightningModule's bookkeeping buffers.
* EMA starts from the initial weights w0 and warms up: update t (0-based) uses the decay min(decay, (1 + t) / (10 + t))
  (``warmup_decay``), so w0's share of the average, the product of the decays, falls below 1% within a few updates
  instead of lingering as decay**t (94% after 63 updates at 0.999). ``warmup=False`` gives the plain rule
  EMA_1 = d * w0 + (1 - d) * w1. (torch's ``AveragedModel`` copies the model at its first update, which would make
  it w1.)
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ablate.training.step_metrics import ClassificationStats


def warmup_decay(decay: float, update: int, warmup: bool = True) -> float:
    """The decay of EMA update ``update`` (0-based): ``decay``, or with warm-up min(decay, (1 + t) / (10 + t)), the
    ``num_updates`` rule of tf.train.ExponentialMovingAverage (timm's ModelEmaV3 warms up likewise, in a power
    form). The average then spans about the last (t + 10) / 9 updates until it reaches ``decay``'s span."""
    return min(decay, (1 + update) / (10 + update)) if warmup else decay


def initial_weight_share(decay: float, updates: int, warmup: bool = True) -> float:
    """w0's weight in the average after ``updates`` updates: the product of their decays (EMA_0 = w0)."""
    if not warmup or decay <= 0:
        return decay**updates
    # Past update t_cap the warm-up decay has reached ``decay``: the rest is one power (no loop over long runs).
    t_cap = updates if decay >= 1 else min(updates, max(math.ceil((10 * decay - 1) / (1 - decay)), 0))
    share = math.prod(warmup_decay(decay, t) for t in range(t_cap))
    return share * decay ** (updates - t_cap)


def planned_updates(total_steps: int, start_step: int = 0, every_n_steps: int = 1) -> int:
    """EMA updates in a run of ``total_steps`` optimizer steps: the step indices 0..T-1 for which Lightning's
    ``EMAWeightAveraging.should_update`` holds (>= start_step and a multiple of every_n_steps)."""
    every = max(every_n_steps, 1)
    return len(range(math.ceil(start_step / every) * every, total_steps, every))


def warmup_ema_multi_avg_fn(decay: float, warmup: bool = True) -> Any:
    """torch's ``get_ema_multi_avg_fn`` (a foreach lerp) with the decay of the current update, read from
    ``AveragedModel``'s ``num_averaged`` (saved with the average, so a resumed run continues the warm-up)."""
    if not warmup:
        return get_ema_multi_avg_fn(decay)

    def update(ema_params: list[Tensor], params: list[Tensor], num_averaged: Tensor) -> None:
        # num_averaged counts the copy of w0 made at train start: the first real update sees 1, i.e. t = 0.
        get_ema_multi_avg_fn(warmup_decay(decay, int(num_averaged) - 1))(ema_params, params, num_averaged)

    return update


def eval_logits(model: nn.Module, x: torch.Tensor, repeats: int = 1) -> torch.Tensor:
    """Logits (or log of the mean probabilities of ``repeats`` stochastic passes, as the module's eval step does)."""
    if repeats > 1:
        return torch.stack([model(x).softmax(dim=1) for _ in range(repeats)]).mean(0).clamp_min(1e-12).log()
    return model(x)


class _RawWeightsAveraging(WeightAveraging):
    """WeightAveraging that averages ``pl_module.model`` and leaves the module's (raw) weights alone."""

    variant = "avg"  # metric suffix: val/acc_<variant>
    log_per_epoch = False  # score the average on every validation batch (EMA); SWA needs BN stats first

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pending_state: dict[str, Any] | None = None
        self._val_stats = ClassificationStats()
        self.val_acc_best = 0.0

    @property
    def average_model(self) -> nn.Module:
        """The averaged classifier (an ``nn.Module`` with the raw model's structure)."""
        if self._average_model is None:
            raise RuntimeError("the averaged model exists only after fit() has started")
        return self._average_model.module

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self._average_model is None:
            device = self._device or pl_module.device
            self._average_model = AveragedModel(
                pl_module.model, device=device, use_buffers=self._use_buffers, **self._kwargs
            )
            self._average_model.eval()  # it is only ever evaluated (update_bn switches modes itself)
            self._val_stats.to(device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending_state is not None:  # resumed: restore the average saved with the checkpoint
            self._average_model.load_state_dict(self._pending_state)
            self._pending_state = None

    # Lightning's hooks, with the classifier instead of the LightningModule as the averaged model.
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step > self._latest_update_step and self.should_update(step_idx=step - 1):
            self._average_model.update_parameters(pl_module.model)
            self._latest_update_step = step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch > self._latest_update_epoch and self.should_update(epoch_idx=epoch):
            self._average_model.update_parameters(pl_module.model)
            self._latest_update_epoch = epoch

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # keep the raw weights in the module (Lightning copies the average in)

    # Validation: the raw weights stay in place; the average is scored on the same batches.
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_stats.reset()

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.log_per_epoch or self._average_model is None or trainer.sanity_checking:
            return
        x, targets = batch  # already normalized by the module's on_after_batch_transfer
        with torch.no_grad():
            logits = eval_logits(self.average_model, x, getattr(pl_module, "eval_repeats", 1))
            self._val_stats.accumulate(logits, targets, nn.functional.cross_entropy(logits, targets))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.log_per_epoch or self._average_model is None or trainer.sanity_checking:
            return
        reduce = None
        if trainer.world_size > 1:
            reduce = lambda t: trainer.strategy.reduce(t, reduce_op="sum")
        metrics = self._val_stats.compute(reduce)
        self.val_acc_best = max(self.val_acc_best, metrics["acc"])
        pl_module.log_dict(
            {
                f"val/loss_{self.variant}": metrics["loss"],
                f"val/acc_{self.variant}": metrics["acc"],
                f"val/acc_{self.variant}_best": self.val_acc_best,
            }
        )

    # Checkpoints: state_dict stays the raw weights; the average is callback state (tensors and ints only).
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        pass

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "latest_update_step": int(self._latest_update_step),
            "latest_update_epoch": int(self._latest_update_epoch),
            "val_acc_best": float(self.val_acc_best),
        }
        if self._average_model is not None:
            state["average"] = {k: v.detach().cpu().clone() for k, v in self._average_model.state_dict().items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._latest_update_step = int(state_dict["latest_update_step"])
        self._latest_update_epoch = int(state_dict.get("latest_update_epoch", -1))
        self.val_acc_best = float(state_dict.get("val_acc_best", 0.0))
        # Applied at train start: trainer.test(ckpt_path=best) also restores callbacks and must not rewind the average.
        self._pending_state = state_dict.get("average")


class EMA(_RawWeightsAveraging, EMAWeightAveraging):
    """Exponential moving average of the weights, updated after every optimizer step (Polyak averaging).

    ``use_buffers=True`` (the default): BN running statistics are averaged like the weights, so the EMA model is
    usable as is. EMA_t = d_t * EMA_{t-1} + (1 - d_t) * w_t, with EMA_0 = w0 (the initial weights) and
    d_t = ``warmup_decay(decay, t, warmup)``.
    """

    variant = "ema"
    log_per_epoch = True

    def __init__(self, decay: float = 0.999, warmup: bool = True, **kwargs: Any) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        super().__init__(decay=decay, **kwargs)
        # EMAWeightAveraging passes the per-tensor avg_fn; the foreach version is the same rule, fewer kernel calls.
        self._kwargs.pop("avg_fn", None)
        self._kwargs["multi_avg_fn"] = warmup_ema_multi_avg_fn(decay, warmup)
        self.decay, self.warmup = decay, warmup

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if int(self._average_model.n_averaged) == 0:  # fresh run: the average starts at w0
            self._average_model.update_parameters(pl_module.model)

    @property
    def updates(self) -> int:
        """Updates made so far (the copy of w0 at train start is not one)."""
        return max(int(self._average_model.n_averaged) - 1, 0) if self._average_model is not None else 0

    def initial_weight_share(self) -> float:
        return initial_weight_share(self.decay, self.updates, self.warmup)


class SWA(_RawWeightsAveraging):
    """Stochastic weight averaging: the equal-weight average of the weights at the end of each epoch (after its last
    optimizer step) from ``start_epoch`` on. Buffers are not averaged (``use_buffers=False``); the BN statistics of
    the averaged weights are recomputed with ``torch.optim.swa_utils.update_bn`` before it is scored
    (``ablate.training.ensembles.swa_model_with_bn``)."""

    variant = "swa"

    def __init__(self, start_epoch: int, **kwargs: Any) -> None:
        super().__init__(use_buffers=False, **kwargs)
        self.start_epoch = int(start_epoch)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # At the epoch's last batch rather than in on_train_epoch_end: Lightning writes the epoch's checkpoint at the
        # validation that precedes on_train_epoch_end, and the checkpoint must include this epoch's update.
        epoch = trainer.current_epoch
        last_batch = batch_idx + 1 == trainer.num_training_batches
        if last_batch and epoch >= self.start_epoch and epoch > self._latest_update_epoch:
            self._average_model.update_parameters(pl_module.model)
            self._latest_update_epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass

    @property
    def n_averaged(self) -> int:
        return int(self._average_model.n_averaged) if self._average_model is not None else 0
