"""ClassifierModule: loss, metrics, per-batch normalization and the optimizer/scheduler wiring."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import nn

from ablate.errors import DivergedError
from ablate.optim import build_scheduler, param_groups, scale_group_lrs
from ablate.training.regularization import StepRegularizers
from ablate.training.scoring import average_probabilities, classification_metrics
from ablate.training.step_metrics import ClassificationStats

Batch = tuple[torch.Tensor, torch.Tensor]
MID_EPOCH_KEY = "ablate_mid_epoch"  # checkpoint entry written only by a checkpoint saved inside a training epoch


class ClassifierModule(L.LightningModule):
    """Trains any ``nn.Module`` classifier on uint8 image batches.

    Per step it only does the work that must be per step: the loss, in-place metric adds on the device, and a
    finiteness check every ``nan_check_every`` steps. Everything is logged once per epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: dict[str, Any] | None,
        mean: torch.Tensor,
        std: torch.Tensor,
        seed: int = 0,
        decay_bias_and_norm: bool = False,
        backbone_lr_scale: float = 1.0,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        nan_check_every: int = 25,
        run_config: dict[str, Any] | None = None,
        augment: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        regularizers: StepRegularizers | None = None,
        eval_repeats: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        accumulate_grad_batches: int = 1,
    ) -> None:
        super().__init__()
        # Manual optimization: the step below is the whole of it (forward, backward, gradient noise, clipping, step,
        # max-norm, LR schedule), in that order, in one place. Lightning's automatic loop does the same through about
        # a dozen more hook calls per step: 285 more Python calls per step on a bare module (throughput/loop_floor.py).
        # Under DDP every backward all-reduces, also inside an accumulation window: correct, if not the fastest.
        self.automatic_optimization = False
        self.gradient_clip_val, self.gradient_clip_algorithm = gradient_clip_val, gradient_clip_algorithm
        self.accumulate_grad_batches = accumulate_grad_batches
        self.model = model
        self.optimizer_factory, self.scheduler_config = optimizer, scheduler
        self.scheduler_interval = scheduler["interval"] if scheduler else None
        self.scheduler_monitor = (scheduler.get("monitor") or "") if scheduler else ""
        self.seed, self.decay_bias_and_norm = seed, decay_bias_and_norm
        self.backbone_lr_scale = backbone_lr_scale  # transfer learning: the backbone's groups get lr * scale
        self.label_smoothing, self.channels_last, self.nan_check_every = label_smoothing, channels_last, nan_check_every
        self.run_config = run_config or {}
        self.augment = augment
        # Split so that with every knob off the hot path pays one `is None` test per hook.
        self.regularizers = regularizers if regularizers is not None and regularizers.active else None
        self.step_hooks = regularizers if regularizers is not None and regularizers.has_step_hooks else None
        self.eval_repeats = eval_repeats
        shape = (1, -1, 1, 1)
        # Kept in the state dict so a checkpoint is self-contained for evaluation and ensembles.
        self.register_buffer("mean", mean.float().reshape(shape))
        self.register_buffer("std", std.float().reshape(shape))
        self.register_buffer("val_acc_best", torch.zeros(()))
        self.register_buffer("val_loss_best", torch.full((), math.inf))  # val/loss_best: the symmetric "best epoch"
        self.train_stats, self.val_stats, self.test_stats = (ClassificationStats() for _ in range(3))
        self._test_outputs: list[Batch] = []  # (probabilities, targets) per test batch, scored at epoch end
        self._test_single_pass: list[torch.Tensor] = []  # first-pass probabilities when eval_repeats > 1
        self.test_per_class: dict[str, list[float]] = {}
        # A dict, so the hot path never goes through nn.Module.__setattr__.
        self._step_state = {"last_batch": -1, "plain_backward": False}
        self._mid_epoch_state: dict[str, Any] | None = None  # from a mid-epoch checkpoint, applied at train start
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` around every hook call, ~40 times per step. nn.Module.__setattr__'s
        # parameter/buffer/module checks made that a measurable share of a small model's step (see
        # experiments/throughput); the attribute only ever holds a string or None.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

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
        self._step_state["plain_backward"] = backward_hooks_are_no_ops(self)
        if self._mid_epoch_state is not None:  # resumed mid-epoch: Lightning skips on_train_epoch_start
            self._restore_mid_epoch(self._mid_epoch_state)
            self._mid_epoch_state = None

    def _backward(self, loss: torch.Tensor) -> None:
        # manual_backward runs the strategy's and precision plugin's backward wrappers and dispatches
        # on_before_backward / on_after_backward to every callback and the module: ~210 Python calls per step
        # (experiments/throughput/loop_floor.py). Where all of that is a no-op (see backward_hooks_are_no_ops) the
        # result is loss.backward().
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
        if not self.scheduler_monitor:
            scheduler.step()
            return
        scheduler.step(
            metrics[self.scheduler_monitor.removeprefix(f"{stage}/")]
        )  # names checked in ablate.config.rules

    # -- evaluation ----------------------------------------------------------------------------------------------
    def _eval_step(self, batch: Batch, stats: ClassificationStats) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (log of the mean probabilities of R passes for stochastic layers), and the first pass's
        probabilities when R > 1 (the single-pass result, at no extra cost)."""
        x, targets = batch
        first = None
        if self.eval_repeats > 1:  # stochastic layers (FMP): average the predicted probabilities of R passes
            passes = [self.model(x).softmax(dim=1) for _ in range(self.eval_repeats)]
            logits, first = average_probabilities(passes).clamp_min(1e-12).log(), passes[0]
        else:
            logits = self.model(x)
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
        """test/loss from the lean counters; test/acc, acc_top5, nll, ece (and per class) from
        ablate.training.scoring."""
        loss = self._reduced_stats(self.test_stats)["loss"]
        if not self._test_outputs:  # no test batch on this rank (e.g. limit_test_batches=0)
            return
        probs = torch.cat([p for p, _ in self._test_outputs])
        targets = torch.cat([t for _, t in self._test_outputs])
        self._test_outputs = []
        if self.trainer.world_size > 1:  # each rank holds a disjoint shard: score the whole split on every rank
            probs, targets = self._gather_uneven(probs), self._gather_uneven(targets)
        metrics = classification_metrics(probs, targets, probs.shape[1])
        self.test_per_class = {"test/acc": metrics.pop("acc_per_class")}
        if self._test_single_pass:  # R > 1 passes averaged: also the first pass alone (Graham 2014's "1 test")
            single = torch.cat(self._test_single_pass)
            single = self._gather_uneven(single) if self.trainer.world_size > 1 else single
            metrics["acc_single_pass"] = float((single.argmax(dim=1) == targets).float().mean())
            self._test_single_pass = []
        self.log_dict({"test/loss": loss, **{f"test/{k}": v for k, v in metrics.items()}}, prog_bar=True)

    def _gather_uneven(self, t: torch.Tensor) -> torch.Tensor:
        """All ranks' rows of ``t`` (shards may differ by a few rows: padded for all_gather, then trimmed)."""
        sizes = self.all_gather(torch.tensor(t.shape[0], device=t.device)).flatten().tolist()
        padded = torch.cat([t, t.new_zeros((max(sizes) - t.shape[0], *t.shape[1:]))])
        gathered = self.all_gather(padded)
        return torch.cat([gathered[rank, :size] for rank, size in enumerate(sizes)])

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
        # LBFGS takes a single parameter group (and has no weight decay to exempt anything from).
        single_group = self.decay_bias_and_norm or getattr(self.optimizer_factory, "func", None) is torch.optim.LBFGS
        optimizer = self.optimizer_factory(param_groups(self.model, single_group, self.backbone_lr_scale))
        scale_group_lrs(optimizer)
        if not self.scheduler_config:
            return optimizer
        cfg = self.scheduler_config
        scheduler = build_scheduler(
            cfg["fn"],
            optimizer,
            cfg["interval"],
            steps=self._optimizer_steps(),
            epochs=int(self.trainer.max_epochs or 1),
        )
        # Returned so Lightning checkpoints it and LearningRateMonitor sees it; training_step and the epoch-end hooks
        # step it (manual optimization).
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _optimizer_steps(self) -> int:
        """Optimizer steps in the whole run (accumulation is ours, so the trainer counts batches, not steps)."""
        batches = int(self.trainer.estimated_stepping_batches)  # also sets up the train loader
        if self.accumulate_grad_batches == 1:
            return batches
        per_epoch = math.ceil(self.trainer.num_training_batches / self.accumulate_grad_batches)
        steps = per_epoch * int(self.trainer.max_epochs or 1)
        return min(steps, self.trainer.max_steps) if self.trainer.max_steps > 0 else steps

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain, resolved config only (no nn.Module / partials): loads with torch.load(weights_only=True).
        checkpoint["ablate_config"] = self.run_config
        # Inside an epoch (a stop at a batch end, or a save at validation end): started but not yet processed.
        progress = self.trainer.fit_loop.epoch_progress.current if self._trainer is not None else None
        if progress is not None and self.trainer.state.fn == "fit" and progress.started > progress.processed:
            checkpoint[MID_EPOCH_KEY] = self._mid_epoch_snapshot()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._mid_epoch_state = checkpoint.get(MID_EPOCH_KEY)
        # Checkpoints written before val/loss_best existed: resume with "no best yet" instead of a missing key.
        checkpoint.get("state_dict", {}).setdefault("val_loss_best", torch.full((), math.inf))

    def _mid_epoch_snapshot(self) -> dict[str, Any]:
        """What a mid-epoch checkpoint needs beyond Lightning's state to continue the epoch exactly as if never
        stopped: the torch RNG states (augmentation, dropout and noise draw from them; the per-epoch reseed in
        ``on_train_epoch_start`` does not run on a mid-epoch restart) and the epoch's running train statistics."""
        state: dict[str, Any] = {
            "cpu_rng": torch.get_rng_state(),
            "train_stats": {k: v.detach().cpu().clone() for k, v in self.train_stats.named_buffers()},
        }
        loader = self.trainer.train_dataloader
        if hasattr(loader, "state_dict"):
            # Lightning saves it too, but loads it only when the fit loop builds the loader after the restore;
            # configure_optimizers' estimated_stepping_batches builds it before (Trainer._run: strategy.setup,
            # then restore_training_state), so the saved position would be ignored.
            state["loader"] = loader.state_dict()
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore_mid_epoch(self, state: dict[str, Any]) -> None:
        self._restore_rng(state)
        for name, buf in self.train_stats.named_buffers():
            buf.copy_(state["train_stats"][name])
        loader = self.trainer.train_dataloader
        if "loader" in state and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(state["loader"])  # read at the first batch (the iterator is a generator)

    def _restore_rng(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["cpu_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)


def backward_hooks_are_no_ops(module: L.LightningModule) -> bool:
    """Whether ``manual_backward`` would do nothing but ``loss.backward()`` for this module in its trainer.

    True for one device with Lightning's plain 32-bit ``Precision`` plugin when neither the module nor any callback
    overrides ``on_before_backward``, ``on_after_backward`` or the module's ``backward``. Any other precision plugin
    (mixed precision scales the loss), any other strategy (DDP sets up the gradient sync) or any such hook keeps
    Lightning's path.
    """
    trainer = module.trainer
    if type(trainer.strategy) is not SingleDeviceStrategy or type(trainer.strategy.precision_plugin) is not Precision:
        return False
    hooks = ("on_before_backward", "on_after_backward")
    if any(is_overridden(hook, module, L.LightningModule) for hook in (*hooks, "backward")):
        return False
    return not any(is_overridden(hook, callback, L.Callback) for callback in trainer.callbacks for hook in hooks)


# Lightning reads the step methods' signatures on every batch (is_param_in_hook_signature -> getfullargspec, ~45
# Python calls); inspect returns a function's precomputed __signature__ instead of rebuilding it.
for _step in (ClassifierModule.training_step, ClassifierModule.validation_step, ClassifierModule.test_step):
    _step.__signature__ = inspect.signature(_step)  # type: ignore[attr-defined]
