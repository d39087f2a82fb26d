"""ClassifierModule: loss, metrics, per-batch normalization and the optimizer/scheduler wiring."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from ablate.errors import DivergedError
from ablate.training import configure_optimizers as optimization
from ablate.training import lightning_fast, mid_epoch
from ablate.training.module_config import Evaluation, Network, Objective, Stepping
from ablate.training.scoring import classification_metrics, eval_logits, gather_rows, pass_agreement
from ablate.training.step_metrics import ClassificationStats

Batch = tuple[torch.Tensor, torch.Tensor]


class ClassifierModule(lightning_fast.HookAttrFastPath, L.LightningModule):
    """Trains any ``nn.Module`` classifier on uint8 image batches.

    Per step it only does the work that must be per step: the loss, in-place metric adds on the device, and a
    finiteness check every ``nan_check_every`` steps. Everything is logged once per epoch.
    """

    def __init__(
        self,
        network: Network,
        stepping: Stepping | None = None,
        objective: Objective | None = None,
        evaluation: Evaluation | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        """``run_config``: the resolved config, plain data, written into every checkpoint as ``ablate_config``.
        A group left out takes its "off" values: a module that only scores (evaluate.py) names ``network`` and
        ``evaluation``; it has no optimizer, augmentation or regularizers."""
        super().__init__()
        stepping, objective, evaluation = stepping or Stepping(), objective or Objective(), evaluation or Evaluation()
        # Manual optimization: the step below is the whole of it (forward, backward, gradient noise, clipping, step,
        # max-norm, LR schedule), in that order, in one place. Lightning's automatic loop does the same through about
        # a dozen more hook calls per step: 285 more Python calls per step on a bare module (throughput/loop_floor.py).
        # Under DDP every backward all-reduces, also inside an accumulation window: correct, if not the fastest.
        self.automatic_optimization = False
        # Unpacked into plain attributes, read per step with one lookup. The submodules and buffers are registered in
        # the order they always were (model, augment, then the buffers below), so the state dict is unchanged.
        self.model, self.channels_last = network.model, network.channels_last
        self.optimizer_factory, self.scheduler_config = stepping.optimizer, stepping.scheduler
        scheduler = stepping.scheduler
        self.scheduler_interval = scheduler["interval"] if scheduler else None
        self.scheduler_monitor = (scheduler.get("monitor") or "") if scheduler else ""
        self.decay_bias_and_norm, self.backbone_lr_scale = stepping.decay_bias_and_norm, stepping.backbone_lr_scale
        self.gradient_clip_val = stepping.gradient_clip_val
        self.gradient_clip_algorithm = stepping.gradient_clip_algorithm
        self.accumulate_grad_batches, self.nan_check_every = stepping.accumulate_grad_batches, stepping.nan_check_every
        self.seed, self.label_smoothing, self.augment = objective.seed, objective.label_smoothing, objective.augment
        # Split so that with every knob off the hot path pays one `is None` test per hook.
        regularizers = objective.regularizers
        self.regularizers = regularizers if regularizers is not None and regularizers.active else None
        self.step_hooks = regularizers if regularizers is not None and regularizers.has_step_hooks else None
        self.eval_repeats = evaluation.repeats
        self.run_config = run_config or {}
        shape = (1, -1, 1, 1)
        # Kept in the state dict so a checkpoint is self-contained for evaluation and ensembles.
        self.register_buffer("mean", network.mean.float().reshape(shape))
        self.register_buffer("std", network.std.float().reshape(shape))
        self.register_buffer("val_acc_best", torch.zeros(()))
        self.register_buffer("val_loss_best", torch.full((), math.inf))  # val/loss_best: the symmetric "best epoch"
        self.train_stats, self.val_stats, self.test_stats = (ClassificationStats() for _ in range(3))
        self._test_outputs: list[Batch] = []  # (probabilities, targets) per test batch, scored at epoch end
        self._test_single_pass: list[torch.Tensor] = []  # first-pass probabilities when eval_repeats > 1
        self.test_per_class: dict[str, list[float]] = {}
        # R > 1 test passes: per-image agreement of the single pass and the R-pass average (McNemar's test's counts)
        self.test_passes: dict[str, int] = {}
        # A dict, so the hot path never goes through nn.Module.__setattr__.
        self._step_state = {"last_batch": -1, "plain_backward": False}
        self._mid_epoch_state: dict[str, Any] | None = None  # from a mid-epoch checkpoint, applied at train start
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # -- data on device ------------------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        images, labels = batch
        x = images.float().div_(255)
        if self.augment is not None and self.trainer.training:  # never on validation/test batches
            x, labels = self.augment(x, labels)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> model input on the module's device, never augmented: for evaluation outside a trainer loop
        (ensembles, averaged weights, evaluate.py). Same arithmetic as ``on_after_batch_transfer`` for eval batches."""
        x = (images.to(self.mean.device).float().div_(255) - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # -- training ------------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self._step_state["plain_backward"] = lightning_fast.plain_backward(self)
        if self._mid_epoch_state is not None:  # resumed mid-epoch: Lightning skips on_train_epoch_start
            mid_epoch.restore(self, self._mid_epoch_state)
            self._mid_epoch_state = None

    def _backward(self, loss: torch.Tensor) -> None:
        # manual_backward dispatches no-op backward hooks: ~210 Python calls per step (throughput/loop_floor.py).
        # Where it would do nothing else (lightning_fast.plain_backward), the result is loss.backward().
        if self._step_state["plain_backward"]:
            loss.backward()
        else:
            self.manual_backward(loss)

    def on_train_epoch_start(self) -> None:
        # Reseeding per epoch makes every epoch a function of (seed, epoch, weights): a resumed run replays it.
        torch.manual_seed(self.seed * 1_000_003 + self.current_epoch * 1_009 + self.global_rank)
        self.train_stats.reset()
        self._step_state["last_batch"] = -1

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        optimizer = self.optimizers()
        accumulate = self.accumulate_grad_batches
        if accumulate > 1 and not self._ends_accumulation_window(batch_idx):
            self._backward(self._objective(batch, batch_idx) / accumulate)
            return

        def closure() -> torch.Tensor:  # LBFGS calls it several times per step; every other optimizer once
            if accumulate == 1:
                optimizer.zero_grad(set_to_none=True)
            objective = self._objective(batch, batch_idx)
            self._backward(objective / accumulate if accumulate > 1 else objective)
            return objective

        optimizer.step(closure=closure)  # runs on_before_optimizer_step (noise, clipping) between closure and step
        if accumulate > 1:
            optimizer.zero_grad(set_to_none=True)
        if self.step_hooks is not None:
            self.step_hooks.after_optimizer_step()
        if self.scheduler_interval == "step":
            self.lr_schedulers().step()

    def _ends_accumulation_window(self, batch_idx: int) -> bool:
        return (batch_idx + 1) % self.accumulate_grad_batches == 0 or batch_idx + 1 == self.trainer.num_training_batches

    def _objective(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """The loss to minimise: the data term plus any penalties and adversarial term; records the batch's stats."""
        x, targets = batch
        reg = self.regularizers
        if reg is not None:
            reg.start_step()
        logits = self.model(x) if reg is None else reg.forward(x)
        loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        objective = loss
        if reg is not None:
            penalty = reg.penalty()  # first: it consumes the activations recorded by the forward pass above
            objective = reg.adversarial_loss(x, targets, loss, self.pixels_to_normalized)
            if penalty is not None:
                objective = objective + penalty
        # train/loss reports the data term only, so runs with different penalties stay comparable.
        if batch_idx != self._step_state["last_batch"]:  # LBFGS re-evaluates the closure: count each batch once
            self._step_state["last_batch"] = batch_idx
            if batch_idx % self.nan_check_every == 0:
                self._check_finite()  # the previous steps' losses; this one is counted below
            self.train_stats.accumulate(logits, targets, loss)
        return objective

    def pixels_to_normalized(self, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """An eps in pixel units as a per-channel step in normalized units, and the normalized pixel range."""
        return eps / self.std, (0 - self.mean) / self.std, (1 - self.mean) / self.std

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Called by the precision plugin after the closure (and after AMP unscaling), before optimizer.step.
        if self.step_hooks is not None:
            self.step_hooks.before_optimizer_step(self.global_step)
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)

    def _check_finite(self) -> None:
        if not self.train_stats.loss_is_finite():
            lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self.trainer.optimizers else float("nan")
            raise DivergedError(
                f"training loss became NaN/inf in epoch {self.current_epoch} (lr={lr:g}); "
                "fix: lower optimizer.lr, add warm-up (scheduler=warmup_cosine) or gradient clipping "
                "(trainer.gradient_clip_val=1.0)"
            )

    def on_train_epoch_end(self) -> None:
        self._check_finite()
        metrics = self._log_stats("train", self.train_stats)
        if self.scheduler_interval == "epoch" and not self.scheduler_monitor.startswith("val/"):
            self._step_epoch_scheduler(metrics, "train")

    def _step_epoch_scheduler(self, metrics: dict[str, float], stage: str) -> None:
        scheduler = self.lr_schedulers()
        if self.scheduler_monitor:  # names checked in ablate.config.rules
            scheduler.step(metrics[self.scheduler_monitor.removeprefix(f"{stage}/")])
        else:
            scheduler.step()

    # -- evaluation ----------------------------------------------------------------------------------------------
    def _eval_step(self, batch: Batch, stats: ClassificationStats) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (log of the mean probabilities of R passes for stochastic layers), and the first pass's
        probabilities when R > 1 (the single-pass result, at no extra cost)."""
        x, targets = batch
        logits, first = eval_logits(self.model, x, self.eval_repeats)  # R > 1: stochastic layers (FMP), R passes
        stats.accumulate(logits, targets, F.cross_entropy(logits, targets))
        return logits, first

    def on_validation_epoch_start(self) -> None:
        self.val_stats.reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        # Validation stays on the lean counters: it runs every epoch and feeds checkpointing and early stopping, and
        # val/loss already is the validation NLL. The extended metrics (top-5, ECE, per class) are the test loop's.
        self._eval_step(batch, self.val_stats)

    def on_validation_epoch_end(self) -> None:
        metrics = self._log_stats("val", self.val_stats)
        if not self.trainer.sanity_checking:
            self.val_acc_best.fill_(max(float(self.val_acc_best), metrics["acc"]))
            self.log("val/acc_best", float(self.val_acc_best))
            self.val_loss_best.fill_(min(float(self.val_loss_best), metrics["loss"]))
            self.log("val/loss_best", float(self.val_loss_best))
            if self.scheduler_interval == "epoch" and self.scheduler_monitor.startswith("val/"):
                # Here, not at epoch end: before the checkpoint of this validation is written, so a run resumed
                # from it does not step the plateau schedule twice.
                self._step_epoch_scheduler(metrics, "val")

    def on_test_epoch_start(self) -> None:
        self.test_stats.reset()
        self._test_outputs, self.test_per_class, self._test_single_pass = [], {}, []

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        logits, first = self._eval_step(batch, self.test_stats)
        # Kept on the device until epoch end: the whole split's probabilities (N x C) are small next to the data.
        self._test_outputs.append((logits.float().softmax(dim=1), batch[1]))
        if first is not None:
            self._test_single_pass.append(first.float())

    def on_test_epoch_end(self) -> None:
        """test/loss from the lean counters; test/acc, acc_top5, nll, ece (and per class) from training.scoring."""
        loss = self._reduced_stats(self.test_stats)["loss"]
        if not self._test_outputs:  # no test batch on this rank (e.g. limit_test_batches=0)
            return
        probs = torch.cat([p for p, _ in self._test_outputs])
        targets = torch.cat([t for _, t in self._test_outputs])
        self._test_outputs = []
        if self.trainer.world_size > 1:  # each rank holds a disjoint shard: score the whole split on every rank
            probs, targets = gather_rows(self.all_gather, probs), gather_rows(self.all_gather, targets)
        metrics = classification_metrics(probs, targets, probs.shape[1])
        self.test_per_class = {"test/acc": metrics.pop("acc_per_class")}
        if self._test_single_pass:  # R > 1 passes averaged: also the first pass alone (Graham 2014's "1 test")
            single = torch.cat(self._test_single_pass)
            single = gather_rows(self.all_gather, single) if self.trainer.world_size > 1 else single
            metrics["acc_single_pass"] = float((single.argmax(dim=1) == targets).float().mean())
            self.test_passes = {"passes": int(self.eval_repeats), **pass_agreement(single, probs, targets)}
            self._test_single_pass = []
        self.log_dict({"test/loss": loss, **{f"test/{k}": v for k, v in metrics.items()}}, prog_bar=True)

    def _reduced_stats(self, stats: ClassificationStats) -> dict[str, float]:
        reduce = None
        if self.trainer.world_size > 1:
            reduce = lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")
        return stats.compute(reduce)

    def _log_stats(self, stage: str, stats: ClassificationStats) -> dict[str, float]:
        metrics = self._reduced_stats(stats)
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, prog_bar=stage != "train")
        return metrics

    # -- optimization --------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        return optimization.configure(self)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain, resolved config only (no nn.Module / partials): loads with torch.load(weights_only=True).
        checkpoint["ablate_config"] = self.run_config
        if lightning_fast.inside_train_epoch(self):  # a stop at a batch end, or a save at validation end
            checkpoint[mid_epoch.KEY] = mid_epoch.snapshot(self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._mid_epoch_state = checkpoint.get(mid_epoch.KEY)
        # Checkpoints written before val/loss_best existed: resume with "no best yet" instead of a missing key.
        checkpoint.get("state_dict", {}).setdefault("val_loss_best", torch.full((), math.inf))


# Lightning reads the step methods' signatures on every batch: computed once here.
lightning_fast.precompute_signatures(
    ClassifierModule.training_step, ClassifierModule.validation_step, ClassifierModule.test_step
)
