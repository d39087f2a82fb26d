"""The training split scored in eval mode after the fit: ``train/acc_eval`` and ``train/nll_eval``.

``train/acc`` is the running accuracy of the training epochs: training mode (dropout, DropConnect, stochastic depth
masks active, batch statistics, augmented images) and averaged over an epoch of changing weights. A generalization
gap needs the final weights the way validation sees them: eval mode, no augmentation, the same R stochastic passes.
"""

from __future__ import annotations

from typing import Any

import torch

from ablate.data.loader import InMemoryLoader
from ablate.training.scoring import classification_metrics, eval_probabilities


def eval_mode_train_metrics(module: Any, datamodule: Any, max_images: int | None = None) -> dict[str, float]:
    """``train/acc_eval`` and ``train/nll_eval`` of the module's current weights over the training split (its first
    ``max_images`` images when given: a run limited to a few training batches, e.g. ``debug=fast``, scores as many).

    The random number generators are forked, so the run's later numbers (test passes of stochastic layers, the
    ensembles' scores) are the same as without this pass.
    """
    if not len(datamodule.y_train) or not isinstance(datamodule.x_train, torch.Tensor):
        # Streamed image folders (data.imagefolder with files decoded per batch) are skipped: a second full pass of
        # JPEG decoding would cost as much as a training epoch; their tables fall back to train/acc (and say so).
        return {}
    model, device = module.model, module.mean.device
    was_training = model.training
    x, y = datamodule.x_train[:max_images], datamodule.y_train[:max_images]  # max_images None: the whole split
    loader = InMemoryLoader(x, y, datamodule.eval_batch_size, shuffle=False)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            probs, targets = eval_probabilities(model, module, loader)
        finally:
            model.train(was_training)
    metrics = classification_metrics(probs, targets, probs.shape[1])
    return {"train/acc_eval": metrics["acc"], "train/nll_eval": metrics["nll"]}
