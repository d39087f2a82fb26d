"""Snapshot ensembles (Huang et al. 2017): keep the weights at the end of each cosine cycle of one run.

The paper's schedule is alpha(t) = alpha0 / 2 * (cos(pi * mod(t - 1, ceil(T / M)) / ceil(T / M)) + 1) over
iterations t = 1..T with M cycles (``ablate.optim.schedulers.snapshot``). When M does not divide T the remainder is
spread over the first cycles (T = 126, M = 5: 26, 25, 25, 25, 25; ``schedulers.cycle_lengths``), so that every cycle
ends annealed. A snapshot is taken after the last iteration of each cycle, the one trained with the cycle's smallest
LR. The NoCycle baseline (``ensemble=nocycle``) takes snapshots at the same iterations of a standard schedule.

Lightning has no snapshot callback; this one only saves state dicts at those steps (no per-step work beyond one
integer comparison).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from ablate.optim.schedulers import cycle_ends
from ablate.training.configure_optimizers import optimizer_steps


def snapshot_steps(total_steps: int, cycles: int) -> list[int]:
    """The optimizer steps (1-based iterations) after which snapshots are taken: the ends of the M cycles, always M
    of them, the last one at T (a run too short for M cycles is a ConfigError naming ensemble.cycles)."""
    return cycle_ends(total_steps, cycles, key="ensemble.cycles")


class SnapshotCollector(L.Callback):
    """Saves ``<dirpath>/snapshot_<k>.pt`` (the module's state dict, tensors only) at the end of each cycle.

    A snapshot file has the keys of a checkpoint's ``state_dict`` (``model.*`` plus the input normalization), so it
    loads with ``torch.load(weights_only=True)`` and evaluates like a checkpoint. The steps and file paths taken so far
    are the callback's checkpoint state, so a resumed run continues the list.
    """

    def __init__(self, dirpath: str | Path, cycles: int, members: int | str | None = None) -> None:
        # members: the last m snapshots are ensembled; None = all M; "auto" = m chosen on validation at scoring time
        self.dirpath, self.cycles, self.members = Path(dirpath), int(cycles), members
        self.chosen_members: int | None = None  # the m actually ensembled, set when the snapshots are scored
        self.steps: list[int] = []  # set at fit start from the run length (optimizer steps)
        self.taken: dict[int, str] = {}  # optimizer step -> snapshot file

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The same run length the scheduler's `total_steps` came from (accumulation counted).
        accumulate = getattr(pl_module, "accumulate_grad_batches", None)
        total = optimizer_steps(trainer, accumulate) if accumulate is not None else trainer.max_steps
        self.steps = snapshot_steps(int(total), self.cycles)
        self._pending = set(self.steps) - set(self.taken)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step  # optimizer steps taken so far (per step, not per batch, under accumulation)
        if step in self._pending:
            self._pending.discard(step)
            self.take(trainer, pl_module, step)

    def take(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        k = self.steps.index(step) + 1
        path = self.dirpath / f"snapshot_{k}.pt"
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            state = {name: t.detach().cpu().clone() for name, t in pl_module.state_dict().items()}
            torch.save(state, path)
        self.taken[step] = str(path)

    def paths(self) -> list[str]:
        """Snapshot files in the order taken (cycle 1 first)."""
        return [self.taken[s] for s in sorted(self.taken)]

    def state_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "taken": {int(k): v for k, v in self.taken.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.taken = {int(k): str(v) for k, v in state_dict.get("taken", {}).items()}
