"""Weight averaging inside one run: EMA (Polyak averaging) and SWA (Izmailov et al. 2018).

Plain Lightning callbacks over ``torch.optim.swa_utils`` (``AveragedModel``, the EMA/SWA averaging functions,
``update_bn``), with the update rule of Lightning's ``EMAWeightAveraging`` (after optimizer step t when
t >= start_step and t % every_n_steps == 0; ``trainer.global_step`` counts optimizer steps, also under our manual
optimization and gradient accumulation). Not subclasses of Lightning's ``WeightAveraging``: every one of its hooks
was replaced, and what was left to inherit was its private state.

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
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ablate.training.scoring import eval_logits
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


class RawWeightsAveraging(L.Callback):
    """An ``AveragedModel`` of ``pl_module.model`` beside the module, whose (raw) weights it leaves alone."""

    variant = "avg"  # metric suffix: val/acc_<variant>
    log_per_epoch = False  # score the average on every validation batch (EMA); SWA needs BN stats first

    def __init__(self, device: torch.device | None = None, use_buffers: bool = True, **average_kwargs: Any) -> None:
        self.device, self.use_buffers, self.average_kwargs = device, use_buffers, average_kwargs
        self.averaged: AveragedModel | None = None
        # Optimizer steps taken at the last update (0: the first check is after the first step), and the epoch of the
        # last per-epoch update (-1: none yet); both saved with the checkpoint.
        self.latest_update_step, self.latest_update_epoch = 0, -1
        self._pending_state: dict[str, Any] | None = None
        self._val_stats = ClassificationStats()
        self.val_acc_best = 0.0

    @property
    def average_model(self) -> nn.Module:
        """The averaged classifier (an ``nn.Module`` with the raw model's structure)."""
        if self.averaged is None:
            raise RuntimeError("the averaged model exists only after fit() has started")
        return self.averaged.module

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.averaged is None:
            device = self.device or pl_module.device
            self.averaged = AveragedModel(
                pl_module.model, device=device, use_buffers=self.use_buffers, **self.average_kwargs
            )
            self.averaged.eval()  # it is only ever evaluated (update_bn switches modes itself)
            self._val_stats.to(device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending_state is not None:  # resumed: restore the average saved with the checkpoint
            self.averaged.load_state_dict(self._pending_state)
            self._pending_state = None

    def should_update(self, step_idx: int) -> bool:
        """Whether to update after optimizer step ``step_idx`` (0-based); subclasses set the rule."""
        return True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step > self.latest_update_step and self.should_update(step - 1):
            self.averaged.update_parameters(pl_module.model)
            self.latest_update_step = step

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
        if not self.log_per_epoch or self.averaged is None or trainer.sanity_checking:
            return
        x, targets = batch  # already normalized by the module's on_after_batch_transfer
        with torch.no_grad():
            logits = eval_logits(self.average_model, x, getattr(pl_module, "eval_repeats", 1))[0]
            self._val_stats.accumulate(logits, targets, nn.functional.cross_entropy(logits, targets))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.log_per_epoch or self.averaged is None or trainer.sanity_checking:
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
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "latest_update_step": int(self.latest_update_step),
            "latest_update_epoch": int(self.latest_update_epoch),
            "val_acc_best": float(self.val_acc_best),
        }
        if self.averaged is not None:
            state["average"] = {k: v.detach().cpu().clone() for k, v in self.averaged.state_dict().items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.latest_update_step = int(state_dict["latest_update_step"])
        self.latest_update_epoch = int(state_dict.get("latest_update_epoch", -1))
        self.val_acc_best = float(state_dict.get("val_acc_best", 0.0))
        # Applied at train start: trainer.test(ckpt_path=best) also restores callbacks and must not rewind the average.
        self._pending_state = state_dict.get("average")


class EMA(RawWeightsAveraging):
    """Exponential moving average of the weights, updated after every optimizer step (Polyak averaging).

    ``use_buffers=True`` (the default): BN running statistics are averaged like the weights, so the EMA model is
    usable as is. EMA_t = d_t * EMA_{t-1} + (1 - d_t) * w_t, with EMA_0 = w0 (the initial weights) and
    d_t = ``warmup_decay(decay, t, warmup)``.
    """

    variant = "ema"
    log_per_epoch = True

    def __init__(
        self,
        decay: float = 0.999,
        warmup: bool = True,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        # The foreach averaging function (one lerp per tensor list): the same rule as the per-tensor avg_fn.
        super().__init__(multi_avg_fn=warmup_ema_multi_avg_fn(decay, warmup), **kwargs)
        self.decay, self.warmup = decay, warmup
        self.update_every_n_steps, self.update_starting_at_step = update_every_n_steps, update_starting_at_step

    def should_update(self, step_idx: int) -> bool:
        """Lightning's ``EMAWeightAveraging`` rule (``planned_updates`` counts the same steps)."""
        started = self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
        return started and self.update_every_n_steps > 0 and step_idx % self.update_every_n_steps == 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if int(self.averaged.n_averaged) == 0:  # fresh run: the average starts at w0
            self.averaged.update_parameters(pl_module.model)

    @property
    def updates(self) -> int:
        """Updates made so far (the copy of w0 at train start is not one)."""
        return max(int(self.averaged.n_averaged) - 1, 0) if self.averaged is not None else 0

    def initial_weight_share(self) -> float:
        return initial_weight_share(self.decay, self.updates, self.warmup)


class SWA(RawWeightsAveraging):
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
        if last_batch and epoch >= self.start_epoch and epoch > self.latest_update_epoch:
            self.averaged.update_parameters(pl_module.model)
            self.latest_update_epoch = epoch

    @property
    def n_averaged(self) -> int:
        return int(self.averaged.n_averaged) if self.averaged is not None else 0
