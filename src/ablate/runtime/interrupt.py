"""SIGINT, SIGTERM (and SLURM's requeue signal) end a run cleanly: status ``interrupted``, exit 128 + signal.

A signal during training is noted and acted on at the next safe point, the end of the current optimizer step:
``last.ckpt`` is then rewritten (atomically, with its checksum) with the state after that step, including the
position in the epoch, the RNG states and the epoch's running statistics, and resuming from it continues with the
same batches and random numbers, to the same final metrics (``InMemoryLoader.state_dict``,
``ClassifierModule.on_save_checkpoint``). A signal during an epoch's last batch or its validation stops right after
that epoch's own ``last.ckpt`` (Lightning's ``FitLoop.reset`` treats a checkpoint of the last batch as a finished
epoch and would skip its validation and epoch end); one inside a gradient accumulation window stops at its end.
(SIGTERM there: Lightning's own SIGTERM flag may raise first, leaving the last epoch's ``last.ckpt``.) A second
signal stops at once, with ``last.ckpt`` as it was. Outside training (data loading, sanity check, testing) the
first signal stops at once.

Why not Lightning's own handling: Ctrl-C there ends in ``sys.exit(1)``, SIGTERM in an exception that exits 0, and
SLURM's requeue handler saves a checkpoint from inside the signal handler, in the middle of whatever the step was
doing. Lightning registers its handlers only where none exists (SIGUSR1) or composes them with ours (SIGTERM), so
installing ours first is enough; no Lightning internals are touched.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import lightning as L


class RunInterrupted(Exception):
    """Raised at a safe point after a signal; ``exit_code`` is 128 + the signal number (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class _State:
    pending: int | None = None  # the signal waiting for a safe point
    deferring = False  # True while the fit loop runs (StopAtSafePoint is active)
    in_job = False  # False between the jobs of a sweep: nothing is half-done there
    on_exit_between_jobs: Callable[[int], None] | None = None


STATE = _State()


def _handler(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    if STATE.deferring and STATE.pending is None:
        STATE.pending = signum
        # os.write: print() from a signal handler can hit a re-entrant buffered write.
        os.write(2, f"\n{name}: stopping at the end of this batch (send it again to stop now)\n".encode())
        return
    if not STATE.in_job:
        if STATE.on_exit_between_jobs is not None:
            STATE.on_exit_between_jobs(signum)
        raise SystemExit(128 + signum)
    raise RunInterrupted(signum)


def requeue_signal() -> int | None:
    """SLURM's requeue signal when this process runs under SLURM with Lightning's auto-requeue, else None."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return int(signal.SIGUSR1) if SLURMEnvironment.detect() else None


def install() -> dict[int, Any]:
    """Install the handlers (main thread only); returns the previous ones for ``restore``."""
    signums = [signal.SIGINT, signal.SIGTERM]
    if (usr := requeue_signal()) is not None:
        signums.append(signal.Signals(usr))
    STATE.pending, STATE.deferring, STATE.in_job = None, False, True
    return {s: signal.signal(s, _handler) for s in signums}


def restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


class StopAtSafePoint(L.Callback):
    """Turns a pending signal into ``RunInterrupted`` between optimizer steps, after saving ``last.ckpt``.

    One attribute read per batch. Placed last among the callbacks, so the others' batch-end work (EMA updates,
    snapshots) is done and saved with the step.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        STATE.deferring = True

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            STATE.deferring = False

    def _check(self) -> None:
        if STATE.pending is not None:
            raise RunInterrupted(STATE.pending)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if STATE.pending is None:
            return
        done = batch_idx + 1
        if done >= trainer.num_training_batches:  # the epoch's end is the safe point (see the module docstring)
            return
        if done % max(int(getattr(pl_module, "accumulate_grad_batches", 1)), 1):
            return  # inside a gradient accumulation window: the summed gradients are in no checkpoint
        write_last = getattr(
            trainer.checkpoint_callback, "write_last", None
        )  # ablate.training.callbacks.ModelCheckpoint
        if write_last is not None:
            write_last(trainer)
        self._check()

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.sanity_checking:  # nothing trained yet; validation inside an epoch finishes, then the epoch's end
            self._check()

    def on_train_epoch_start(self, *args: Any) -> None:
        self._check()


def requeue_slurm_job() -> None:
    """``scontrol requeue`` this job, as Lightning's auto-requeue does; the new start resumes this run's folder."""
    import subprocess

    from ablate.runtime.results import slurm_job_id

    job = slurm_job_id()
    if not job:
        return
    try:
        result = subprocess.call(["scontrol", "requeue", job])
    except FileNotFoundError:
        result = 127
    print(f"SLURM job {job}: {'requeued' if result == 0 else f'requeue failed (scontrol exit {result})'}")
