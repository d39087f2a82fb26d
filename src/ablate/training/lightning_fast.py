"""Every use of Lightning's internals, in one place, behind a version check.

Each trick here makes a small model's step faster or fixes a Lightning behaviour we cannot fix through a hook; each
relies on a detail of Lightning that is not public API. They were written and measured against the versions in
``TESTED`` (requirements.lock; pyproject's range). On any other Lightning version ``FAST`` is False: every function
takes Lightning's public path instead, and one warning line says so (``NOTES`` keeps it for results.json), never a
traceback. Numbers do not depend on ``FAST``: only speed and, for ``LastEveryEpoch``, which epoch ``last.ckpt`` holds.

What the tricks save, per training step of a small model (experiments/throughput/loop_floor.py, bench.py):

- ``HookAttrFastPath``: Lightning sets ``_current_fx_name`` ~40 times per step through nn.Module.__setattr__;
- ``precompute_signatures``: Lightning inspects the step methods' signatures on every batch;
- ``plain_backward``: ``manual_backward`` dispatches ~210 Python calls of no-op hooks per step.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch import callbacks
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden

TESTED = ((2, 6, 6), (2, 7))  # [from, to): the Lightning versions these internals were verified on
NOTES: list[str] = []  # the one-line fallback warning, for whoever records a run's warnings


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("+")[0].split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _check(version: str) -> bool:
    low, high = TESTED
    if low <= _release(version) < high:
        return True
    note = (
        f"lightning {version} is outside the tested range {'.'.join(map(str, low))} to <{'.'.join(map(str, high))}: "
        "ablate.training.lightning_fast uses Lightning's public paths (slower steps; last.ckpt as Lightning writes it)"
    )
    NOTES.append(note)
    logging.getLogger("ablate").warning(note)
    return False


FAST = _check(L.__version__)


# -- per-step speed ----------------------------------------------------------------------------------------------
class _HookAttrFastPath:
    """LightningModule mixin: ``_current_fx_name`` (a string or None, set by Lightning around every hook call) goes
    straight to the instance dict instead of through nn.Module.__setattr__'s parameter/buffer/module checks."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class _NoFastPath:
    pass


HookAttrFastPath: type = _HookAttrFastPath if FAST else _NoFastPath


def precompute_signatures(*methods: Callable[..., Any]) -> None:
    """Lightning reads the step methods' signatures on every batch (is_param_in_hook_signature -> getfullargspec,
    ~45 Python calls); inspect returns a function's ``__signature__`` instead of rebuilding it."""
    if FAST:
        for method in methods:
            method.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]


def plain_backward(module: L.LightningModule) -> bool:
    """Whether ``manual_backward`` would do nothing but ``loss.backward()`` for this module in its trainer.

    True for one device with Lightning's plain 32-bit ``Precision`` plugin when neither the module nor any callback
    overrides ``on_before_backward``, ``on_after_backward`` or the module's ``backward``. Any other precision plugin
    (mixed precision scales the loss), any other strategy (DDP sets up the gradient sync) or any such hook keeps
    Lightning's path; so does a Lightning version outside ``TESTED``.
    """
    if not FAST:
        return False
    trainer = module.trainer
    if type(trainer.strategy) is not SingleDeviceStrategy or type(trainer.strategy.precision_plugin) is not Precision:
        return False
    hooks = ("on_before_backward", "on_after_backward")
    if any(is_overridden(hook, module, L.LightningModule) for hook in (*hooks, "backward")):
        return False
    return not any(is_overridden(hook, callback, L.Callback) for callback in trainer.callbacks for hook in hooks)


# -- loop state --------------------------------------------------------------------------------------------------
def inside_train_epoch(module: L.LightningModule) -> bool:
    """Whether a checkpoint saved now is inside a training epoch: started, not yet processed (a stop at a batch end,
    a save at validation end). Reads the fit loop's progress counters, which have no public accessor."""
    try:
        trainer = module.trainer
    except RuntimeError:  # not attached to a trainer (a checkpoint saved by hand)
        return False
    loop = getattr(trainer, "fit_loop", None)
    progress = getattr(getattr(loop, "epoch_progress", None), "current", None)
    if progress is None:
        return False
    return trainer.state.fn == "fit" and progress.started > progress.processed


# -- ModelCheckpoint: last.ckpt after every epoch ----------------------------------------------------------------
class LastEveryEpoch(callbacks.ModelCheckpoint):
    """ModelCheckpoint that writes ``last.ckpt`` after every epoch and on demand (``write_last``).

    Lightning 2.6 rewrites ``last.ckpt`` only in steps where a top-k checkpoint was also saved, so after an epoch that
    did not improve the monitored metric it held an older epoch (and a resume re-trained it). With ``FAST`` it is
    written through Lightning's own ``_save_last_checkpoint`` (version counter, link mode, removal of the previous
    file) where Lightning writes it in an improving epoch; otherwise ``write_last`` falls back to the public
    ``trainer.save_checkpoint`` and the epoch-end rewrite is Lightning's own.
    """

    _last_written_step = -1

    if FAST:

        def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
            super()._save_last_checkpoint(trainer, monitor_candidates)
            self._last_written_step = trainer.global_step

    def write_last(self, trainer: L.Trainer) -> None:
        """``last.ckpt`` now, unless it already holds this step (also mid-epoch: ablate.runtime.interrupt's stop)."""
        if not self.save_last or self._last_written_step == trainer.global_step:
            return
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if FAST:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            return
        path = str(Path(self.dirpath or ".") / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}")
        self.last_model_path = path  # before saving: it is part of the callback's saved state
        trainer.save_checkpoint(path, self.save_weights_only)
        self._last_written_step = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if FAST and not self._should_save_on_train_epoch_end(trainer):
            self.write_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if FAST:
            self.write_last(trainer)  # also the epochs without validation (check_val_every_n_epoch > 1)


# -- loggers -----------------------------------------------------------------------------------------------------
def drop_null_anonymous(logger: Any) -> None:
    """Lightning (2.6) always passes wandb.init(anonymous=None); wandb >= 0.19 warns on any value of that deprecated
    setting, None included ("The anonymous setting has no effect ...", once per run). Leave it unset instead. Outside
    ``TESTED`` the warning line stays (harmless)."""
    init = getattr(logger, "_wandb_init", None) if FAST else None
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
