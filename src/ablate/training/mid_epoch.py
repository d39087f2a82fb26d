"""A checkpoint saved inside a training epoch, continued exactly as if training had never stopped.

Lightning's own state covers the weights, optimizer, schedules and loop counters; a mid-epoch restart also needs
the torch RNG states (augmentation, dropout and noise draw from them; the module's per-epoch reseed in
``on_train_epoch_start`` does not run on a mid-epoch restart), the epoch's running train statistics and the train
loader's position. ``ClassifierModule.on_save_checkpoint`` writes them under ``KEY``; ``on_train_start`` restores them.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

KEY = "ablate_mid_epoch"  # checkpoint entry written only by a checkpoint saved inside a training epoch


def snapshot(module: L.LightningModule) -> dict[str, Any]:
    """What a mid-epoch checkpoint needs beyond Lightning's state (see the module docstring)."""
    state: dict[str, Any] = {
        "cpu_rng": torch.get_rng_state(),
        "train_stats": {k: v.detach().cpu().clone() for k, v in module.train_stats.named_buffers()},
    }
    loader = module.trainer.train_dataloader
    if hasattr(loader, "state_dict"):
        # Lightning saves it too, but loads it only when the fit loop builds the loader after the restore;
        # configure_optimizers' estimated_stepping_batches builds it before (Trainer._run: strategy.setup,
        # then restore_training_state), so the saved position would be ignored.
        state["loader"] = loader.state_dict()
    if module.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(module.device)
    return state


def restore(module: L.LightningModule, state: dict[str, Any]) -> None:
    """Puts back what ``snapshot`` saved; called at train start, before the first batch of the resumed epoch."""
    restore_rng(module, state)
    for name, buf in module.train_stats.named_buffers():
        buf.copy_(state["train_stats"][name])
    loader = module.trainer.train_dataloader
    if "loader" in state and hasattr(loader, "load_state_dict"):
        loader.load_state_dict(state["loader"])  # read at the first batch (the iterator is a generator)


def restore_rng(module: L.LightningModule, state: dict[str, Any]) -> None:
    """The torch RNG states of the stop (its own function: tests/test_midepoch_resume.py's control skips it)."""
    torch.set_rng_state(state["cpu_rng"])
    if "cuda_rng" in state and module.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], module.device)
