"""GPU time of the paper-scale experiments (configs/experiment/<name>.yaml): an estimate from FLOPs, and a measurement.

    python experiments/gpu_probe.py --flops               # FLOPs per image and the estimated sweep time (any machine)
    python experiments/gpu_probe.py --time swa adam       # 2 full epochs at paper size on synthetic data: s/epoch
    python experiments/gpu_probe.py --time --all          # every paper experiment (on a GPU: minutes in all)

``--flops`` builds each experiment's network exactly as train.py does (same config, synthetic images of the paper's
shape) and counts one training step's FLOPs (forward + backward, batch 2, training mode) and one evaluation forward
with torch.utils.flop_counter.FlopCounterMode; it counts matmuls and convolutions, not pooling, BatchNorm or
elementwise ops (a few % of a ResNet's time, more of FMP's). The estimate per run is

    epochs x (train x F_train + val x F_eval x R) / S  +  epochs x steps x C  (+ DropConnect's memory traffic)
    + (train + test) x F_eval x R / S                  (the end-of-run passes: train/acc_eval and the test)

with R the stochastic test passes (FMP's 12), S the sustained throughput (--tflops, default 5 TFLOP/s: fp32
`precision: 32-true`, narrow 16-64-channel convolutions at batch 64-128 keep an A100 far below its 19.5 TFLOP/s fp32
peak) and C the fixed cost per optimizer step (--step-ms, default 1 ms: Lightning's loop, the optimizer's kernels and
launch latency that small models cannot hide). Per-example DropConnect materialises one weight matrix per example:
its cost is memory traffic, ~32 bytes per mask entry (batch x weights) per step at --gbps (default 1,500 GB/s).
These are assumptions, not measurements: ``--time`` on the GPU replaces them.

``--time`` runs the experiment's config through ``ablate.runtime.job.train`` (train.py's code path) for 2 epochs on
synthetic images of the paper's shape and count (CIFAR-10: 50,000 3x32x32; MNIST: 60,000 1x28x28) with the paper's
validation split, and prints the second epoch's seconds (the first includes cuDNN autotuning and warm-up) from
history.csv, and that time x epochs x runs as the measured sweep estimate (the end-of-run passes not included).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"


@dataclass(frozen=True)
class Paper:
    """What the paper-scale sweep of one experiment runs (its README's "Paper scale" commands)."""

    channels: int
    size: int  # before data.pad (FMP pads MNIST to 36x36 itself)
    dataset_train: int  # the paper data set's training split, before our validation split
    runs: int
    sweep: str  # how `runs` is counted


CIFAR10, MNIST = (3, 32, 50_000), (1, 28, 60_000)
TEST_IMAGES = 10_000  # both test sets
PAPERS: dict[str, Paper] = {
    "snapshot_ensembles": Paper(*CIFAR10, 12, "ensemble=none,nocycle x 3 seeds + ensemble=snapshot lr=0.1,0.2 x 3"),
    "stochastic_depth": Paper(*CIFAR10, 6, "reg.stochastic_depth=1.0,0.5 x 3 seeds"),
    "dropconnect": Paper(*MNIST, 27, "3 activations x reg=none,dropout,dropconnect x 3 seeds"),
    "dropout": Paper(*MNIST, 18, "6 regularizer sets x 3 seeds"),
    "adam": Paper(*MNIST, 15, "5 optimizers x 3 seeds"),
    "fractional_max_pooling": Paper(*MNIST, 12, "fmp_mode x fmp_overlapping (2 x 2) x 3 seeds"),
    "swa": Paper(*CIFAR10, 6, "ensemble=none,swa x 3 seeds"),
    "random_vs_grid": Paper(*MNIST, 1280, "2 samplers x 10 search seeds x 64 trials"),
}


def probe_overrides(name: str, epochs: int = 2) -> list[str]:
    """The README's one-line probe: `epochs` epochs of a few batches on synthetic images of the paper's shape."""
    paper = PAPERS[name]
    return [
        f"experiment={name}",
        "debug=fast",
        "data=synthetic",
        f"data.synthetic.channels={paper.channels}",
        f"data.synthetic.size={paper.size}",
        "data.val_size=0.1",
        f"trainer.max_epochs={epochs}",
    ]


def probe_command(name: str) -> str:
    return "python train.py " + " ".join(probe_overrides(name))


def compose(overrides: list[str], output_dir: Path) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=[*overrides, f"paths.output_dir={output_dir}"])


def _paper_size(name: str, time_it: bool) -> list[str]:
    """Synthetic data of the paper's shape; for timing also of its size (the paper's split sizes and batch)."""
    paper = PAPERS[name]
    size = [f"data.synthetic.num_train={paper.dataset_train}", f"data.synthetic.num_test={TEST_IMAGES}"]
    shape = ["data=synthetic", f"data.synthetic.channels={paper.channels}", f"data.synthetic.size={paper.size}"]
    small = ["data.synthetic.num_train=2000", "data.synthetic.num_test=100", "data.val_size=0.1"]  # shapes only
    return [f"experiment={name}", *shape, *(size if time_it else small)]


def _val_images(cfg: Any, dataset_train: int) -> int:
    val = cfg.data.val_size
    return round(val * dataset_train) if isinstance(val, float) and val < 1 else int(val)


# -- FLOPs -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flops:
    train: float  # one training step (forward + backward), per image
    eval: float  # one evaluation forward, per image and pass
    repeats: int  # evaluation passes averaged (FMP's test-time average)
    batch: int
    epochs: int
    train_images: int
    val_images: int
    dropconnect_weights: int  # weights of per-example DropConnect layers (memory-bound, see the docstring)


def count_flops(name: str) -> Flops:
    """One training step's and one evaluation forward's FLOPs per image of the experiment's network."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ablate.build.lightning_module import eval_repeats
    from ablate.build.recipe import build
    from ablate.config.rules import check
    from ablate.config.schema import RegConfig, typed

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([f"experiment={name}"], Path(tmp))  # the paper's split, batch and epochs
        recipe = build(check(compose(_paper_size(name, time_it=False), Path(tmp))).config, quiet=True)
    model, batch = recipe.model, 2  # 2: BatchNorm needs more than one value per channel in training mode
    x = torch.rand(batch, *recipe.datamodule.input_shape)
    model.train()
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    train_flops = counter.get_total_flops() / batch
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    per_sample = [m for m in model.modules() if getattr(m, "per_sample", False) and getattr(m, "p", 0) > 0]
    paper = PAPERS[name]
    val = _val_images(cfg, paper.dataset_train)
    return Flops(
        train=train_flops,
        eval=counter.get_total_flops() / batch,
        repeats=eval_repeats(typed(cfg.reg, RegConfig)),
        batch=int(cfg.data.batch_size),
        epochs=int(cfg.trainer.max_epochs),
        train_images=paper.dataset_train - val,
        val_images=val,
        dropconnect_weights=sum(m.weight.numel() for m in per_sample),
    )


def run_seconds(f: Flops, tflops: float, step_ms: float, gbps: float, dropconnect_share: float = 1.0) -> float:
    """Estimated seconds of one run (see the module docstring for the formula)."""
    s = tflops * 1e12
    steps = -(-f.train_images // f.batch)
    epoch = (f.train_images * f.train + f.val_images * f.eval * f.repeats) / s + steps * step_ms / 1e3
    epoch += dropconnect_share * steps * 8 * f.batch * f.dropconnect_weights * 4 / (gbps * 1e9)
    return f.epochs * epoch + (f.train_images + TEST_IMAGES) * f.eval * f.repeats / s


# DropConnect runs are 9 of the 27 (reg=dropconnect); the model built here carries the experiment's own reg (none).
DROPCONNECT_RUNS = {"dropconnect": 9}


def sweep_seconds(name: str, f: Flops, tflops: float, step_ms: float, gbps: float) -> float:
    """The sweep's estimated seconds: its runs at the experiment's own reg, plus DropConnect's memory traffic."""
    total = PAPERS[name].runs * run_seconds(f, tflops, step_ms, gbps, dropconnect_share=0.0)
    if name in DROPCONNECT_RUNS:  # the network of reg=dropconnect: the same FLOPs plus its memory traffic
        dc = _dropconnect_flops(f, name)
        total += DROPCONNECT_RUNS[name] * (
            run_seconds(dc, tflops, step_ms, gbps) - run_seconds(dc, tflops, step_ms, gbps, 0.0)
        )
    return total


def print_flops(names: list[str], tflops: float, step_ms: float, gbps: float) -> None:
    print(f"assumed: {tflops:g} TFLOP/s sustained, {step_ms:g} ms per step, {gbps:g} GB/s for per-example DropConnect;")
    print("range: every throughput halved (S/2, 2C, GB/s / 2) to doubled (2S, C/2, 2 GB/s)")
    print(
        "| experiment | GFLOP/img train step | GFLOP/img eval pass | runs x epochs | min per run | sweep GPU-h "
        "| range |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in names:
        f, paper = count_flops(name), PAPERS[name]
        total = sweep_seconds(name, f, tflops, step_ms, gbps)
        low = sweep_seconds(name, f, 2 * tflops, step_ms / 2, 2 * gbps)
        high = sweep_seconds(name, f, tflops / 2, 2 * step_ms, gbps / 2)
        print(
            f"| {name} | {f.train / 1e9:.4g} | {f.eval / 1e9:.4g} (x{f.repeats}) | {paper.runs} x {f.epochs} "
            f"| {total / paper.runs / 60:.1f} | {total / 3600:.1f} | {low / 3600:.1f}-{high / 3600:.1f} |",
            flush=True,
        )


def _dropconnect_flops(f: Flops, name: str) -> Flops:
    """The same counts with the weights of the DropConnect run's per-example layers (every hidden Linear)."""
    from dataclasses import replace

    from ablate.build.recipe import build
    from ablate.config.rules import check

    with tempfile.TemporaryDirectory() as tmp:
        cfg = check(compose([*_paper_size(name, time_it=False), "reg=dropconnect"], Path(tmp))).config
        model = build(cfg, quiet=True).model
    weights = sum(m.weight.numel() for m in model.modules() if getattr(m, "per_sample", False))
    return replace(f, dropconnect_weights=weights)


# -- measured ---------------------------------------------------------------------------------------------------------


def time_probe(name: str, epochs: int = 2, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train the experiment for `epochs` full epochs on synthetic data of the paper's shape and size (``extra``:
    further Hydra overrides, e.g. trainer.accelerator=gpu)."""
    from ablate.runtime.job import train

    overrides = [
        *_paper_size(name, time_it=True),
        f"trainer.max_epochs={epochs}",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_model_summary=false",
        "~callbacks.progress_bar",
        "test=false",
        *extra,
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(overrides, Path(tmp))
        start = time.time()
        summary = train(cfg, quiet=True)
        wall = time.time() - start
        with (Path(tmp) / "history.csv").open() as fh:
            times = [float(row["time"]) for row in csv.DictReader(fh)]
    per_epoch = times[-1] - times[-2] if len(times) > 1 else times[-1]
    return {"s_per_epoch": per_epoch, "first_epoch_s": times[0], "wall_s": wall, "device": summary["device"]}


def print_times(names: list[str], epochs: int, extra: tuple[str, ...] = ()) -> None:
    from ablate.errors import AblateError

    print("| experiment | device | first epoch s | s/epoch | runs x epochs | sweep GPU-h (epochs only) |")
    print("|---|---|---|---|---|---|")
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            paper_epochs = int(compose([f"experiment={name}"], Path(tmp)).trainer.max_epochs)
        try:
            t, paper = time_probe(name, epochs, extra), PAPERS[name]
        except AblateError as err:  # e.g. a diverged run: its epochs are no timing; say so and go on with the rest
            print(f"| {name} | - | - | - | - | failed: {err} |", flush=True)
            continue
        hours = paper.runs * paper_epochs * t["s_per_epoch"] / 3600
        print(
            f"| {name} | {t['device']} | {t['first_epoch_s']:.1f} | {t['s_per_epoch']:.2f} "
            f"| {paper.runs} x {paper_epochs} | {hours:.1f} |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"experiments (default with --all: {', '.join(PAPERS)})")
    parser.add_argument("--all", action="store_true", help="every paper experiment")
    parser.add_argument("--flops", action="store_true", help="count FLOPs and print the estimate table")
    parser.add_argument("--time", action="store_true", help="measure s/epoch (2 full epochs, synthetic data)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tflops", type=float, default=5.0)
    parser.add_argument("--step-ms", type=float, default=1.0)
    parser.add_argument("--gbps", type=float, default=1500.0)
    parser.add_argument("--override", action="append", default=[], help="a Hydra override for --time runs")
    parser.add_argument("--commands", action="store_true", help="print each experiment's one-line probe")
    args = parser.parse_args(argv)
    names = list(PAPERS) if args.all or not args.names else args.names
    unknown = [n for n in names if n not in PAPERS]
    if unknown:
        print(f"error: unknown experiment {unknown[0]!r}; known: {', '.join(PAPERS)} (e.g. swa)", file=sys.stderr)
        return 2
    if args.commands or not (args.flops or args.time):
        for name in names:
            print(probe_command(name))
    if args.flops:
        print_flops(names, args.tflops, args.step_ms, args.gbps)
    if args.time:
        print_times(names, args.epochs, tuple(args.override))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
