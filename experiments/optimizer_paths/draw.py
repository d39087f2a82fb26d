"""Trajectories of SGD, momentum, Nesterov, AdaGrad, RMSProp and Adam on 2-D test functions.

Every optimizer is built from the same ``configs/optimizer/<name>.yaml`` that ``train.py`` uses: the ``train`` config is
composed with Hydra's compose API (``optimizer=<name>`` plus any ``optimizer.*`` overrides) and ``cfg.optimizer`` (a
``_partial_``) is instantiated on one 2-element tensor. Only the learning rate is overridden per function (``LRS``):
the configs' rates are tuned for network weights, not for these surfaces' curvature and scale.

    python experiments/optimizer_paths/draw.py [--out experiments/optimizer_paths/optimizer_paths.png]
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from ablate.build.finetune import pop_backbone_lr_scale

REPO = Path(__file__).resolve().parents[2]
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
COLORS = {
    "sgd": "#000000",
    "momentum": "#1f77b4",
    "nesterov": "#17becf",
    "adagrad": "#2ca02c",
    "rmsprop": "#ff7f0e",
    "adam": "#d62728",
}


@dataclass(frozen=True)
class TestFunction:
    name: str
    title: str
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    start: tuple[float, float]
    minimum: tuple[float, float]
    f_min: float
    steps: int
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    log_contours: bool = False


FUNCTIONS = {
    # Condition number 20: the curvature across the ravine (y) is 20x that along it (x).
    "ravine": TestFunction(
        "ravine",
        r"ravine $f = 0.05x^2 + y^2$",
        lambda x, y: 0.05 * x**2 + y**2,
        (-9.0, 1.5),
        (0.0, 0.0),
        0.0,
        100,
        (-10.0, 4.5),
        (-2.5, 2.5),
    ),
    # A saddle at the origin (curvature +2 in x, -1 in y) between two minima at y = +-1; the start sits 1e-3 off the
    # ridge, so the escape is driven by a tiny gradient in y.
    "saddle": TestFunction(
        "saddle",
        r"saddle $f = x^2 - y^2/2 + y^4/4$",
        lambda x, y: x**2 - 0.5 * y**2 + 0.25 * y**4,
        (-1.5, 1e-3),
        (0.0, 1.0),
        -0.25,
        100,
        (-1.7, 1.7),
        (-0.5, 1.5),
    ),
    "rosenbrock": TestFunction(
        "rosenbrock",
        r"Rosenbrock $f = (1-x)^2 + 100(y-x^2)^2$",
        lambda x, y: (1 - x) ** 2 + 100 * (y - x**2) ** 2,
        (-1.2, 1.0),
        (1.0, 1.0),
        0.0,
        1000,
        (-1.6, 1.4),
        (-0.4, 1.6),
        log_contours=True,
    ),
}

# Learning rate per function, the one override of the configs (everything else, momentum, nesterov, alpha, betas, eps,
# comes from configs/optimizer/*.yaml). The SGD family shares one rate per function (so the three differ only in
# momentum/Nesterov): the largest for which plain SGD is stable across the ravine (lr < 2 / 2 = 1) and on the
# Rosenbrock valley walls (curvature up to ~1000 at the start). The adaptive methods move about lr per step whatever
# the gradient's size, so they get a step size matched to the distances here (a few units) rather than to network
# weights (the configs' 1e-3); AdaGrad gets a larger one since its steps shrink as squared gradients accumulate.
LRS: dict[str, dict[str, float]] = {
    "ravine": {"sgd": 0.4, "momentum": 0.4, "nesterov": 0.4, "adagrad": 1.5, "rmsprop": 0.1, "adam": 0.3},
    "saddle": {"sgd": 0.05, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.5, "rmsprop": 0.02, "adam": 0.05},
    "rosenbrock": {"sgd": 1e-3, "momentum": 1e-3, "nesterov": 1e-3, "adagrad": 0.5, "rmsprop": 0.01, "adam": 0.02},
}


def optimizer_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``cfg.optimizer`` of ``train.py``'s config composed with ``optimizer=<name>`` and the given overrides."""
    return _composed(name, tuple(overrides)).copy()


@functools.cache
def _composed(name: str, overrides: tuple[str, ...]) -> DictConfig:
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"optimizer={name}", *overrides])
    node, _ = pop_backbone_lr_scale(cfg.optimizer)  # train.py drops this key the same way
    return node


def trajectory(fn: TestFunction, node: DictConfig, steps: int | None = None) -> torch.Tensor:
    """(steps + 1, 2) positions of the optimizer built from ``node`` started at ``fn.start``."""
    xy = torch.tensor(fn.start, dtype=torch.float64, requires_grad=True)
    optimizer = instantiate(node)([xy])
    path = [xy.detach().clone()]
    for _ in range(fn.steps if steps is None else steps):
        optimizer.zero_grad()
        loss = fn.f(xy[0], xy[1])
        loss.backward()
        optimizer.step()
        if not torch.isfinite(xy).all():
            break
        path.append(xy.detach().clone())
    return torch.stack(path)


def all_paths(
    functions: Sequence[str] = tuple(FUNCTIONS), optimizers: Sequence[str] = OPTIMIZERS, steps: int | None = None
) -> dict[str, dict[str, torch.Tensor]]:
    """Every optimizer's path on every function, with the learning rates of ``LRS``."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for fname in functions:
        fn = FUNCTIONS[fname]
        out[fname] = {
            name: trajectory(fn, optimizer_config(name, [f"optimizer.lr={LRS[fname][name]}"]), steps)
            for name in optimizers
        }
    return out


def draw(paths: dict[str, dict[str, torch.Tensor]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(paths)
    size = (5.2 * len(names), 9.0)
    fig, axes = plt.subplots(2, len(names), figsize=size, squeeze=False, gridspec_kw={"height_ratios": [3, 2]})
    for col, fname in enumerate(names):
        fn = FUNCTIONS[fname]
        ax, ax_loss = axes[0, col], axes[1, col]
        gx, gy = np.meshgrid(np.linspace(*fn.xlim, 300), np.linspace(*fn.ylim, 300))
        z = fn.f(torch.from_numpy(gx), torch.from_numpy(gy)).numpy() - fn.f_min
        if fn.log_contours:
            ax.contour(gx, gy, z, levels=np.logspace(-1, 3, 13), colors="0.75", linewidths=0.7)
        else:
            ax.contour(gx, gy, z, levels=20, colors="0.75", linewidths=0.7)
        for name, path in paths[fname].items():
            p = path.numpy()
            label = f"{name} (lr {LRS[fname][name]:g})"
            ax.plot(p[:, 0], p[:, 1], "-", color=COLORS[name], lw=1.4, label=label, marker=".", ms=2.5)
            gap = np.array([fn.f(torch.tensor(a), torch.tensor(b)).item() - fn.f_min for a, b in p])
            ax_loss.semilogy(np.maximum(gap, 1e-12), color=COLORS[name], lw=1.4, label=name)
        ax.plot(*fn.start, "ko", ms=6)
        ax.plot(*fn.minimum, "k*", ms=12)
        ax.set(xlim=fn.xlim, ylim=fn.ylim, title=f"{fn.title}, {fn.steps} steps", xlabel="x", ylabel="y")
        ax.legend(fontsize=7, loc="best")
        ax_loss.set(xlabel="step", ylabel=r"$f - f^*$", ylim=(1e-8, None))
        ax_loss.grid(True, which="major", alpha=0.3)
    fig.suptitle("Optimizer paths from configs/optimizer/*.yaml (learning rate per function, see README)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def summary(paths: dict[str, dict[str, torch.Tensor]]) -> str:
    """A markdown table: f - f* after 10%, 50% and 100% of the steps, and the distance to the minimum at the end."""
    lines = ["| function | optimizer | lr | f-f* @10% | f-f* @50% | f-f* end | dist to min end |", "|---" * 7 + "|"]
    for fname, by_opt in paths.items():
        fn = FUNCTIONS[fname]
        for name, p in by_opt.items():
            gaps = [fn.f(p[i, 0], p[i, 1]).item() - fn.f_min for i in (fn.steps // 10, fn.steps // 2, len(p) - 1)]
            dist = math.dist(p[-1].tolist(), fn.minimum)
            cells = " | ".join(f"{g:.2e}" for g in gaps)
            lines.append(f"| {fname} | {name} | {LRS[fname][name]:g} | {cells} | {dist:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("optimizer_paths.png"))
    parser.add_argument("--table", action="store_true", help="also print f - f* per optimizer (the README's table)")
    args = parser.parse_args(argv)
    paths = all_paths()
    draw(paths, args.out)
    print(f"wrote {args.out}")
    if args.table:
        print(summary(paths))


if __name__ == "__main__":
    main()
