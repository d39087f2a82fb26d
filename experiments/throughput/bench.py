"""Seconds per epoch through train.py's code path vs a plain PyTorch loop, same model, data, threads and batches.

    python experiments/throughput/bench.py [--epochs 4] [--repeats 2] [--models mlp convnet] [--set key=value ...]

The Lightning side is train.py's job, ``ablate.runtime.job.train`` (check, build the Recipe, fit), with the default
callbacks (checkpointing, LR monitor, Rich progress bar), the CSV logger and per-epoch validation; the plain side is
the loop below over the same objects, built by ``ablate.build`` from the same config: data module (in-memory uint8
batches, same split), model, augmentation (when --set aug=... turns it on), optimizer and parameter groups; then
its own normalization, one-cycle schedule and a validation pass per epoch.

The two are interleaved epoch by epoch in one process: a callback runs one plain epoch just before each Lightning
epoch starts, so every pair of epochs sees the same machine state. On a shared machine whose speed drifts by
10-30% over minutes, comparing whole runs minutes apart measured the drift more than the code; adjacent epochs
do not. A Lightning epoch is timed from one epoch start to the next (training, validation, checkpointing, logging
and epoch-end hooks included); the first pair of each run is warm-up and left out. The table shows median seconds
per epoch, the median of the per-pair ratios with their range (how far to trust the second decimal), and the ratio
of each side's fastest epoch (interference only adds time, so that estimates each side's own cost).
A second table gives the median training step on each side (one step start to the next, warm-up epoch left out)
and the overhead per step in microseconds: most single steps escape interference, so this is the steadiest
measure of the per-step cost, though it leaves out validation and epoch-end work.
"""

from __future__ import annotations

import argparse
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

from ablate.build import build_datamodule, build_model  # noqa: E402
from ablate.build.optimizer_plan import build_optimization  # noqa: E402
from ablate.config.schema import AugmentConfig, InitConfig, RegConfig, typed  # noqa: E402
from ablate.data.augment import build_augment  # noqa: E402
from ablate.optim import param_groups  # noqa: E402
from ablate.runtime.job import train  # noqa: E402  (what is measured: train.py's path)


class PlainLoop:
    """The loop a careful person writes by hand for the same job, one epoch per call."""

    def __init__(self, cfg) -> None:
        torch.set_flush_denormal(bool(cfg.flush_denormal))  # the same process-wide setting as the ablate side
        torch.manual_seed(cfg.seed)
        self.dm = dm = build_datamodule(cfg)
        reg, init = typed(cfg.reg, RegConfig), typed(cfg.init, InitConfig)
        self.model = build_model(cfg, dm, reg, init).model
        self.channels_last = bool(cfg.channels_last) and len(dm.input_shape) == 3
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        optimizer = build_optimization(cfg, self.model, len(dm.train_dataloader())).optimizer  # a partial
        self.optimizer = optimizer(param_groups(self.model, cfg.decay_bias_and_norm))
        self.augment = build_augment(vars(typed(cfg.aug, AugmentConfig)), dm.num_classes, dm.input_shape[1:])
        steps_per_epoch = -(-len(dm.y_train) // dm.batch_size)
        # The same one-cycle schedule (momentum / beta1 cycled too) as configs/scheduler/onecycle.yaml.
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=cfg.optimizer.lr,
            total_steps=steps_per_epoch * cfg.trainer.max_epochs,
            pct_start=cfg.scheduler.fn.pct_start,
            cycle_momentum=bool(cfg.scheduler.fn.cycle_momentum),
            base_momentum=cfg.scheduler.fn.base_momentum,
            max_momentum=cfg.scheduler.fn.max_momentum,
        )
        self.mean, self.std = dm.mean.view(1, -1, 1, 1), dm.std.view(1, -1, 1, 1)
        self.epoch = 0
        self.step_times: list[float] = []  # start of one training step to the start of the next

    def prepare(self, images: torch.Tensor, labels: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float().div_(255)
        if train and self.augment is not None:
            x, labels = self.augment(x, labels)
        x = (x - self.mean) / self.std
        return (x.contiguous(memory_format=torch.channels_last) if self.channels_last else x), labels

    def run_epoch(self) -> float:
        dm, model, optimizer = self.dm, self.model, self.optimizer
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(dm.y_train), generator=torch.Generator().manual_seed(self.epoch))
        total = torch.zeros(())
        step_start = None
        for i in range(0, len(order), dm.batch_size):
            now = time.perf_counter()
            if step_start is not None and self.epoch > 0:  # epoch 0 is warm-up
                self.step_times.append(now - step_start)
            step_start = now
            idx = order[i : i + dm.batch_size]
            x, targets = self.prepare(dm.x_train[idx], dm.y_train[idx], train=True)
            loss = F.cross_entropy(model(x), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self.scheduler.step()
            total += loss.detach()
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(dm.y_val), dm.eval_batch_size):
                x, labels = self.prepare(
                    dm.x_val[i : i + dm.eval_batch_size], dm.y_val[i : i + dm.eval_batch_size], train=False
                )
                correct += int((model(x).argmax(1) == labels).sum())
        _ = (total.item(), correct / max(len(dm.y_val), 1))
        self.epoch += 1
        return time.perf_counter() - start


class Lockstep(L.Callback):
    """Times each Lightning epoch (start to next start) and runs one plain epoch in the gap before it.

    It also records each Lightning training step (one ``on_train_batch_start`` to the next), as the plain loop does.
    """

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.lightning_times: list[float] = []
        self.plain_times: list[float] = []
        self.step_times: list[float] = []
        self.start: float | None = None
        self.step_start: float | None = None

    def _close_epoch(self) -> None:
        if self.start is not None:
            self.lightning_times.append(time.perf_counter() - self.start)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._close_epoch()
        self.plain_times.append(self.plain.run_epoch())
        self.start = time.perf_counter()
        self.step_start = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self.step_start is not None and trainer.current_epoch > 0:  # epoch 0 is warm-up
            self.step_times.append(now - self.step_start)
        self.step_start = now

    def on_train_end(self, trainer, pl_module) -> None:
        self._close_epoch()


def compose_cfg(model: str, epochs: int, out: Path, extra: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(
            "train",
            overrides=[f"model={model}", f"trainer.max_epochs={epochs}", f"paths.output_dir={out}", *extra],
        )


def paired_epochs(cfg) -> Lockstep:
    """Run both sides in lockstep; the returned callback holds the times.

    Its epoch times include the warm-up epoch (callers drop the first pair); the step times already leave it out.
    """
    lockstep = Lockstep(PlainLoop(cfg))
    train(cfg, extra_callbacks=[lockstep])
    return lockstep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["mlp", "convnet"])
    parser.add_argument("--set", nargs="*", default=[], help="extra Hydra overrides for both sides")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up)")

    rows, step_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            light, plain, light_steps, plain_steps = [], [], [], []
            for rep in range(args.repeats):
                cfg = compose_cfg(model, args.epochs, Path(tmp) / f"{model}-{rep}", args.set)
                lockstep = paired_epochs(cfg)
                a, p = lockstep.lightning_times[1:], lockstep.plain_times[1:]  # the first pair is warm-up
                light += a
                plain += p
                light_steps += lockstep.step_times
                plain_steps += lockstep.plain.step_times
                pairs = "  ".join(f"{x:.2f}/{y:.2f}" for x, y in zip(a, p, strict=True))
                print(f"[{model} repeat {rep + 1}/{args.repeats}] ablate/plain s per epoch: {pairs}", flush=True)
            ratios = [x / y for x, y in zip(light, plain, strict=True)]
            # Interference only ever adds time, so the fastest epochs estimate each side's own cost.
            rows.append((model, statistics.median(plain), statistics.median(light), ratios, min(light) / min(plain)))
            step_rows.append((model, statistics.median(plain_steps), statistics.median(light_steps)))

    print(
        f"\nthreads={torch.get_num_threads()}  epochs={args.epochs} (first is warm-up)  repeats={args.repeats}"
        f"  overrides={' '.join(args.set) or '-'}"
    )
    print(
        f"{'model':<10} {'plain s/epoch':>14} {'ablate s/epoch':>15} {'ratio':>7} {'(min-max of pairs)':>20}"
        f" {'fastest/fastest':>16}"
    )
    for model, p, a, ratios, fastest in rows:
        spread = f"({min(ratios):.2f}-{max(ratios):.2f})"
        print(f"{model:<10} {p:>14.3f} {a:>15.3f} {statistics.median(ratios):>7.2f} {spread:>20} {fastest:>16.2f}")
    # A single training step is short enough that most steps escape interference, so the median step is a steadier
    # measure of the per-step overhead than whole epochs are (it leaves out validation and epoch-end work).
    print(f"\n{'model':<10} {'plain ms/step':>14} {'ablate ms/step':>15} {'ratio':>7} {'overhead us/step':>17}")
    for model, p, a in step_rows:
        print(f"{model:<10} {p * 1e3:>14.3f} {a * 1e3:>15.3f} {a / p:>7.2f} {(a - p) * 1e6:>17.0f}")
    print(f"worst ratio: {max(statistics.median(row[3]) for row in rows):.2f}")


if __name__ == "__main__":
    main()
