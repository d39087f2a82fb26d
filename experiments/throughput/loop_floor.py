"""What one training step costs outside the model: Python calls per step, and the bare Lightning loop's time.

    python experiments/throughput/loop_floor.py [--steps 100] [--repeats 5]

Part 1 counts Python function calls (Python and C) per training step with ``sys.setprofile`` over ``--steps``
steps of the second epoch. Counts are deterministic, unlike timings on a shared machine. It counts:
  - a plain PyTorch loop;
  - a bare LightningModule with manual and with automatic optimization (no callbacks, no logger, no validation);
  - ablate's default path (``ablate.runtime.job.train``, default callbacks and logger), with two variants:
    - with Lightning's ``manual_backward`` forced back on (a callback that listens to ``on_after_backward``);
    - without the precomputed step signatures.
All of them train a tiny MLP (784-16-10) on random uint8 images, batch 128.

Part 2 times the bare manual-optimization LightningModule against the plain loop on the same tiny model,
interleaved ``--repeats`` times, and prints the median seconds per step of each and the difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

from ablate.data.loader import InMemoryLoader  # noqa: E402
from ablate.runtime.job import train  # noqa: E402
from ablate.runtime.profiling import NullProfiler  # noqa: E402
from ablate.training.module import ClassifierModule  # noqa: E402

BATCH, N = 128, 54_000


def tiny_mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))


class CallCounter:
    """Counts profile events ('call' and 'c_call') between start() and stop()."""

    def __init__(self) -> None:
        self.calls = 0

    def _count(self, frame, event, arg) -> None:
        if event in ("call", "c_call"):
            self.calls += 1

    def start(self) -> None:
        sys.setprofile(self._count)

    def stop(self) -> None:
        sys.setprofile(None)


class CountSteps(L.Callback):
    """Counts the calls of batches 100 .. 100+steps of the second epoch (one batch start to the next)."""

    def __init__(self, steps: int) -> None:
        self.counter, self.steps = CallCounter(), steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 1 and batch_idx == 100:
            self.counter.start()
        elif trainer.current_epoch == 1 and batch_idx == 100 + self.steps:
            self.counter.stop()


class ListensToBackward(L.Callback):
    def on_after_backward(self, trainer, pl_module) -> None:
        pass


class BareModule(L.LightningModule):
    def __init__(self, manual: bool) -> None:
        super().__init__()
        self.model = tiny_mlp()
        self.automatic_optimization = not manual

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.model(x.float().div_(255)), y)
        if self.automatic_optimization:
            return loss
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        return None

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), 1e-3)


def random_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (N, 1, 28, 28), dtype=torch.uint8, generator=gen), torch.randint(0, 10, (N,))


def bare_trainer(epochs: int, callbacks: list[L.Callback]) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        profiler=NullProfiler(),
    )


def plain_epoch(x: torch.Tensor, y: torch.Tensor, model, optimizer, step_hook=None) -> None:
    for i, (images, labels) in enumerate(InMemoryLoader(x, y, BATCH, shuffle=True)):
        if step_hook is not None:
            step_hook(i)
        loss = F.cross_entropy(model(images.float().div_(255)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def count_plain(x, y, steps: int) -> float:
    model = tiny_mlp()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    counter = CallCounter()

    def hook(i: int) -> None:
        if i == 100:
            counter.start()
        elif i == 100 + steps:
            counter.stop()

    plain_epoch(x, y, model, optimizer)
    plain_epoch(x, y, model, optimizer, hook)
    return counter.calls / steps


def count_bare(x, y, steps: int, manual: bool) -> float:
    counting = CountSteps(steps)
    bare_trainer(2, [counting]).fit(BareModule(manual), train_dataloaders=InMemoryLoader(x, y, BATCH, shuffle=True))
    return counting.counter.calls / steps


def count_ablate(steps: int, extra_callbacks: list[L.Callback]) -> float:
    counting = CountSteps(steps)
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        overrides = ["model=mlp", "model.depth=1", "model.width=16", "trainer.max_epochs=2", f"paths.output_dir={tmp}"]
        train(compose("train", overrides=overrides), extra_callbacks=[counting, *extra_callbacks])
    return counting.counter.calls / steps


def count_ablate_without_cached_signatures(steps: int) -> float:
    steps_fns = (ClassifierModule.training_step, ClassifierModule.validation_step, ClassifierModule.test_step)
    saved = [fn.__signature__ for fn in steps_fns]
    for fn in steps_fns:
        del fn.__signature__
    try:
        return count_ablate(steps, [])
    finally:
        for fn, signature in zip(steps_fns, saved, strict=True):
            fn.__signature__ = signature


def time_per_step(x, y, repeats: int) -> tuple[float, float]:
    """Median seconds per step of the plain loop and the bare manual LightningModule, interleaved, 3 epochs each."""
    steps = -(-N // BATCH)
    plain, lightning = [], []

    class EpochTimer(L.Callback):
        def on_train_epoch_start(self, *args) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, *args) -> None:
            if trainer.current_epoch > 0:  # the first epoch is warm-up
                lightning.append((time.perf_counter() - self.start) / steps)

    for _ in range(repeats):
        model = tiny_mlp()
        optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
        for epoch in range(3):
            start = time.perf_counter()
            plain_epoch(x, y, model, optimizer)
            if epoch > 0:
                plain.append((time.perf_counter() - start) / steps)
        module = BareModule(manual=True)
        bare_trainer(3, [EpochTimer()]).fit(module, train_dataloaders=InMemoryLoader(x, y, BATCH, shuffle=True))
    return statistics.median(plain), statistics.median(lightning)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not 1 <= args.steps <= 300:
        parser.error("--steps must be in [1, 300] (counted from batch 100 of a 422-batch epoch)")
    # Lightning sets this at import; ablate's CPU runs unset it (ablate.runtime.job), so both sides get the same probe.
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    x, y = random_data()

    rows = [
        ("plain PyTorch loop", count_plain(x, y, args.steps)),
        ("bare LightningModule, manual optimization", count_bare(x, y, args.steps, manual=True)),
        ("bare LightningModule, automatic optimization", count_bare(x, y, args.steps, manual=False)),
        ("ablate default (train.py's path)", count_ablate(args.steps, [])),
        ("ablate, manual_backward forced on", count_ablate(args.steps, [ListensToBackward()])),
        ("ablate, without precomputed step signatures", count_ablate_without_cached_signatures(args.steps)),
    ]
    print(f"\nPython calls per training step (tiny MLP, batch {BATCH}, {args.steps} steps counted)")
    for name, calls in rows:
        print(f"  {name:<46} {calls:8.1f}")

    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    plain, lightning = time_per_step(x, y, args.repeats)
    print(f"\nTime per step, tiny MLP, median of {args.repeats} interleaved repeats x 2 epochs")
    print(f"  plain loop {plain * 1e3:.3f} ms   bare manual LightningModule {lightning * 1e3:.3f} ms")
    print(f"  Lightning's own loop: {(lightning - plain) * 1e6:.0f} us per step")


if __name__ == "__main__":
    main()
