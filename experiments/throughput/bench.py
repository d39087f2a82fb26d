"""Seconds per epoch through train.py's code path vs a plain PyTorch loop, same model, data, threads and batches.

    python experiments/throughput/bench.py [--epochs 3] [--repeats 3] [--models mlp convnet] [--set key=value ...]

The Lightning side is ``ablate.run.train`` with the default callbacks (checkpointing, LR monitor, Rich progress
bar), the CSV logger and per-epoch validation; the plain side is the loop below: the same in-memory uint8 batches,
normalization, augmentation (when --set aug=... turns it on), optimizer and parameter groups, one-cycle schedule
and a validation pass per epoch. Runs are interleaved (Lightning,
plain, Lightning, plain, ...) in one process so both see the same machine state. An epoch's time covers its
training and validation; the first epoch of each run is warm-up and is left out. The table shows median seconds
per epoch and the median over repeats of each back-to-back pair's ratio, with its range: on a shared machine the
range says how far to trust the second decimal.
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
from hydra.utils import instantiate

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

from ablate.data.augment import build_augment  # noqa: E402
from ablate.optim import param_groups  # noqa: E402
from ablate.run import train  # noqa: E402


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # runs after the epoch's validation
        self.times.append(time.perf_counter() - self.start)


def compose_cfg(model: str, epochs: int, out: Path, extra: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(
            "train",
            overrides=[f"model={model}", f"trainer.max_epochs={epochs}", f"paths.output_dir={out}", *extra],
        )


def lightning_epochs(cfg) -> list[float]:
    timer = EpochTimer()
    train(cfg, extra_callbacks=[timer])
    return timer.times


def plain_epochs(cfg) -> list[float]:
    """The loop a careful person writes by hand for the same job."""
    torch.manual_seed(cfg.seed)
    dm = instantiate(cfg.data)
    dm.prepare()
    model = instantiate(cfg.model, input_shape=dm.input_shape, num_classes=dm.num_classes)
    channels_last = bool(cfg.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optimizer, _convert_="all")(param_groups(model, cfg.decay_bias_and_norm))
    augment = build_augment(dict(cfg.aug), dm.num_classes, dm.input_shape[1:])
    steps_per_epoch = -(-len(dm.y_train) // dm.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=cfg.optimizer.lr,
        total_steps=steps_per_epoch * cfg.trainer.max_epochs,
        pct_start=cfg.scheduler.fn.pct_start,
        cycle_momentum=False,
    )
    mean, std = dm.mean.view(1, -1, 1, 1), dm.std.view(1, -1, 1, 1)

    def prepare(images: torch.Tensor, labels: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float().div_(255)
        if train and augment is not None:
            x, labels = augment(x, labels)
        x = (x - mean) / std
        return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), labels

    times = []
    for epoch in range(cfg.trainer.max_epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(dm.y_train), generator=torch.Generator().manual_seed(epoch))
        total = torch.zeros(())
        for i in range(0, len(order), dm.batch_size):
            idx = order[i : i + dm.batch_size]
            x, targets = prepare(dm.x_train[idx], dm.y_train[idx], train=True)
            loss = F.cross_entropy(model(x), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.detach()
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(dm.y_val), dm.eval_batch_size):
                x, labels = prepare(dm.x_val[i : i + dm.eval_batch_size], dm.y_val[i : i + dm.eval_batch_size], False)
                correct += int((model(x).argmax(1) == labels).sum())
        _ = (total.item(), correct / len(dm.y_val))
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["mlp", "convnet"])
    parser.add_argument("--set", nargs="*", default=[], help="extra Hydra overrides for both sides")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up)")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            light, plain, ratios = [], [], []
            for rep in range(args.repeats):
                cfg = compose_cfg(model, args.epochs, Path(tmp) / f"{model}-{rep}", args.set)
                a, p = lightning_epochs(cfg)[1:], plain_epochs(cfg)[1:]
                light += a
                plain += p
                # One ratio per back-to-back pair: a slow drift of the machine's speed cancels out within a pair.
                ratios.append(statistics.median(a) / statistics.median(p))
                print(
                    f"[{model} repeat {rep + 1}/{args.repeats}] ablate {statistics.median(a):.2f}s/epoch"
                    f"  plain {statistics.median(p):.2f}s/epoch  ratio {ratios[-1]:.2f}",
                    flush=True,
                )
            rows.append((model, statistics.median(plain), statistics.median(light), ratios))

    print(
        f"\nthreads={torch.get_num_threads()}  epochs={args.epochs} (first is warm-up)  repeats={args.repeats}"
        f"  overrides={' '.join(args.set) or '-'}"
    )
    print(f"{'model':<10} {'plain s/epoch':>14} {'ablate s/epoch':>15} {'ratio':>7} {'(min-max over repeats)':>24}")
    for model, p, a, ratios in rows:
        spread = f"({min(ratios):.2f}-{max(ratios):.2f})"
        print(f"{model:<10} {p:>14.3f} {a:>15.3f} {statistics.median(ratios):>7.2f} {spread:>24}")
    print(f"worst ratio: {max(statistics.median(r) for *_, r in rows):.2f}")


if __name__ == "__main__":
    main()
