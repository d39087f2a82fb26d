"""SGD, momentum, Nesterov, AdaGrad, RMSProp and Adam on 2-D test functions, each at its best learning rate.

Every optimizer is built from the same ``configs/optimizer/<name>.yaml`` that ``train.py`` uses: the ``train`` config is
composed with Hydra's compose API (``optimizer=<name>``) and ``cfg.optimizer`` (a ``_partial_``) is instantiated on one
2-element float64 tensor. Only the learning rate is changed: every method runs on every surface at every rate of
``LR_GRID`` (declared here, before any run) for the surface's fixed step count; a method's best rate is the one with
the lowest f - f* at that step count (diverged runs count as inf). The figure and tables use each method's best rate.

    python experiments/optimizer_paths/draw.py [--out experiments/optimizer_paths/optimizer_paths.png] [--table]
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from ablate.build.finetune import pop_backbone_lr_scale

REPO = Path(__file__).resolve().parents[2]
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
ADAPTIVE = ("adagrad", "rmsprop", "adam")  # the claim's "adaptive methods", each compared with plain SGD
# The sweep, fixed before any run: 16 rates, 3 per decade, 1e-4 .. 10. The upper end goes past 1 because AdaGrad's
# steps shrink like lr / sqrt(t), so its best rate on these few-unit distances can exceed 1; a best rate at either end
# of the grid is flagged in the tables (the optimum may lie outside it).
LR_GRID = tuple(10.0 ** (-4 + k / 3) for k in range(16))
THRESHOLD = 1e-3  # "reached the minimum": f - f* below this; the speed measure is the first step where that holds
# float64 resolution of f - f*: gaps below this are equal (the saddle's f* = -0.25 leaves ~1e-17 of resolution), so
# two runs both below it are ranked by their steps to THRESHOLD instead.
FLOOR = 1e-12
ESCAPE_Y = 0.5  # the saddle: a run has left the saddle's neighbourhood once |y| >= 0.5, halfway to a minimum (y = +-1)
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


def _beale(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


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
    # The same ravine turned by 45 degrees (u along the valley, v across it), start turned with it: the axis-aligned
    # ravine is exactly what per-coordinate (diagonal) scaling preconditions, so AdaGrad, RMSProp and Adam are favoured
    # there; here the curvatures are no longer per coordinate.
    "ravine45": TestFunction(
        "ravine45",
        r"ravine turned 45°: $u = (x+y)/\sqrt{2}$, $v = (y-x)/\sqrt{2}$",
        lambda x, y: 0.05 * ((x + y) / math.sqrt(2)) ** 2 + ((y - x) / math.sqrt(2)) ** 2,
        ((-9.0 - 1.5) / math.sqrt(2), (-9.0 + 1.5) / math.sqrt(2)),
        (0.0, 0.0),
        0.0,
        100,
        (-9.0, 4.0),
        (-7.5, 4.0),
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
    # The contour panel of the cited figure (Ruder 2016, Fig. 4a, animation by Alec Radford). Its start point was not
    # published; (1, 1.5) lies up-left of the minimum as in the animation (see README).
    "beale": TestFunction(
        "beale",
        r"Beale $f = (1.5-x+xy)^2 + (2.25-x+xy^2)^2 + (2.625-x+xy^3)^2$",
        _beale,
        (1.0, 1.5),
        (3.0, 0.5),
        0.0,
        500,
        (-0.5, 4.5),
        (-1.0, 2.0),
        log_contours=True,
    ),
}


@dataclass(frozen=True)
class Run:
    """One optimizer at one learning rate on one function: positions and f - f* at steps 0..n (inf once diverged)."""

    method: str
    lr: float
    path: np.ndarray  # (steps + 1, 2); shorter when the run diverged
    gap: np.ndarray  # (steps + 1,)

    @property
    def final(self) -> float:
        """f - f* after the fixed step count (inf if the run diverged)."""
        return float(self.gap[-1])

    @property
    def steps_to_threshold(self) -> float:
        """First step with f - f* < THRESHOLD (inf if never within the budget)."""
        return first_step(self.gap < THRESHOLD)

    @property
    def rank_key(self) -> tuple[float, float]:
        """Lower is better: f - f* at the step count (gaps below FLOOR tie), then steps to THRESHOLD."""
        return (max(self.final, FLOOR), self.steps_to_threshold)


def first_step(hits: np.ndarray) -> float:
    """Index of the first True (inf if none)."""
    idx = np.flatnonzero(hits)
    return float(idx[0]) if idx.size else math.inf


def optimizer_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``cfg.optimizer`` of ``train.py``'s config composed with ``optimizer=<name>`` and the given overrides."""
    return _composed(name, tuple(overrides)).copy()


@functools.cache
def _composed(name: str, overrides: tuple[str, ...]) -> DictConfig:
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"optimizer={name}", *overrides])
    node, _ = pop_backbone_lr_scale(cfg.optimizer)  # train.py drops this key the same way
    return node


def with_lr(name: str, lr: float) -> DictConfig:
    """The config of ``optimizer=<name>`` with ``lr`` set (composed once per name: the sweep needs 16 rates each)."""
    node = optimizer_config(name)
    node.lr = float(lr)
    return node


def trajectory(fn: TestFunction, node: DictConfig, steps: int | None = None) -> torch.Tensor:
    """(steps + 1, 2) positions of the optimizer built from ``node`` started at ``fn.start`` (cut at divergence)."""
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


def gaps(fn: TestFunction, path: torch.Tensor, steps: int) -> np.ndarray:
    """f - f* at steps 0..steps, inf past the end of a diverged path (and where f overflows)."""
    with torch.no_grad():
        gap = (fn.f(path[:, 0], path[:, 1]) - fn.f_min).numpy()
    out = np.full(steps + 1, math.inf)
    out[: len(gap)] = np.where(np.isfinite(gap), np.maximum(gap, 0.0), math.inf)
    return out


def run(fn: TestFunction, method: str, lr: float, steps: int | None = None) -> Run:
    n = fn.steps if steps is None else steps
    path = trajectory(fn, with_lr(method, lr), n)
    return Run(method, lr, path.numpy(), gaps(fn, path, n))


def sweep(
    functions: Sequence[str] = tuple(FUNCTIONS),
    optimizers: Sequence[str] = OPTIMIZERS,
    lrs: Sequence[float] = LR_GRID,
    steps: int | None = None,
) -> dict[str, dict[str, list[Run]]]:
    """Every optimizer at every rate of ``lrs`` on every function: ``out[function][method]`` in the order of ``lrs``."""
    return {f: {m: [run(FUNCTIONS[f], m, lr, steps) for lr in lrs] for m in optimizers} for f in functions}


def best(runs: Sequence[Run]) -> Run:
    """The run with the lowest f - f* at the step count (ties below FLOOR: fewest steps to THRESHOLD, then lower lr)."""
    return min(runs, key=lambda r: (*r.rank_key, r.lr))


def escape_step(r: Run) -> float:
    """The saddle: first step with |y| >= ESCAPE_Y (inf if never)."""
    return first_step(np.abs(r.path[:, 1]) >= ESCAPE_Y)


def across(fname: str, path: np.ndarray) -> np.ndarray:
    """The coordinate across a ravine's valley: y, or v = (y - x) / sqrt(2) for the turned one."""
    return (path[:, 1] - path[:, 0]) / math.sqrt(2) if fname == "ravine45" else path[:, 1]


def crossings(v: np.ndarray) -> int:
    """How often a path crosses the valley floor v = 0 (the oscillation across a ravine)."""
    return int(np.count_nonzero(np.sign(v[1:]) * np.sign(v[:-1]) < 0))


def versus_sgd(candidate: Run, sgd: Run) -> str:
    """The primary comparison at each method's best rate: yes (candidate ahead), tie, or no."""
    if candidate.rank_key == sgd.rank_key:
        return "tie"
    return "yes" if candidate.rank_key < sgd.rank_key else "no"


def claim_verdict(per_method: dict[str, str]) -> str:
    """ "Adaptive methods are faster than SGD" on one surface: yes if all are, no if none is, else which are."""
    ahead = [m for m, v in per_method.items() if v == "yes"]
    if len(ahead) == len(per_method):
        return "yes"
    return "no" if not ahead else f"partly ({', '.join(ahead)})"


def _fmt(v: float, spec: str = ".2e") -> str:
    if math.isinf(v):
        return "inf"
    if spec == ".2e" and v < FLOOR:
        return f"<{FLOOR:.0e}"
    return format(v, spec)


def _lr(lr: float) -> str:
    edge = " (edge)" if lr in (LR_GRID[0], LR_GRID[-1]) else ""
    return f"{lr:.3g}{edge}"


def _fastest(runs: Sequence[Run]) -> str:
    r = min(runs, key=lambda r: (r.steps_to_threshold, r.lr))
    return "never" if math.isinf(r.steps_to_threshold) else f"{r.steps_to_threshold:.0f} (lr {r.lr:.3g})"


def main_table(results: dict[str, dict[str, list[Run]]]) -> str:
    """Best f - f* at the step count per method, its rate, steps to THRESHOLD, and the comparison with SGD."""
    lines = [
        f"| function (steps) | method | best lr | f - f* at the step count | steps to f - f* < {THRESHOLD:g} at best lr"
        " | fewest steps to it over the grid (lr) | ahead of SGD |",
        "|---" * 7 + "|",
    ]
    for fname, by_method in results.items():
        sgd = best(by_method["sgd"]) if "sgd" in by_method else None
        for method, runs in by_method.items():
            b = best(runs)
            vs = versus_sgd(b, sgd) if sgd is not None and method in ADAPTIVE else ""
            cells = [f"{fname} ({FUNCTIONS[fname].steps})", method, _lr(b.lr), _fmt(b.final)]
            cells += [_fmt(b.steps_to_threshold, ".0f"), _fastest(runs), vs]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def saddle_table(runs_by_method: dict[str, list[Run]]) -> str:
    """Steps to leave the saddle (|y| >= ESCAPE_Y) at the best rate, fastest over the grid, and for how many rates."""
    lines = [
        f"| method | best lr | steps to \\|y\\| >= {ESCAPE_Y} at best lr | fewest over the grid (lr)"
        f" | rates that escape within {FUNCTIONS['saddle'].steps} steps (of those that do not diverge) |",
        "|---" * 5 + "|",
    ]
    for method, runs in runs_by_method.items():
        b = best(runs)
        # Only runs that stay finite count: SGD at lr 10 reaches |y| = 0.5 in 3 steps while diverging along x.
        finite = [r for r in runs if math.isfinite(r.final)] or list(runs)
        fastest = min(finite, key=lambda r: (escape_step(r), r.lr))
        escaped = sum(math.isfinite(escape_step(r)) for r in finite)
        fast = "never" if math.isinf(escape_step(fastest)) else f"{escape_step(fastest):.0f} ({fastest.lr:.3g})"
        cells = [method, _lr(b.lr), _fmt(escape_step(b), ".0f"), fast, f"{escaped} / {len(finite)}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ravine_table(fname: str, runs_by_method: dict[str, list[Run]]) -> str:
    """Oscillation across the valley at each method's best rate: crossings of its floor, largest excursion after 5."""
    lines = [f"| {fname}: method | best lr | crossings of the floor | max distance from it after step 5 |"]
    lines.append("|---" * 4 + "|")
    for method, runs in runs_by_method.items():
        b = best(runs)
        v = across(fname, b.path)
        lines.append(f"| {method} | {_lr(b.lr)} | {crossings(v)} | {np.abs(v[5:]).max():.3f} |")
    return "\n".join(lines)


def verdict_table(results: dict[str, dict[str, list[Run]]]) -> str:
    """The primary comparison per surface: each adaptive method vs SGD, each at its best rate."""
    lines = ["| function | " + " | ".join(ADAPTIVE) + " | adaptive methods faster than SGD |", "|---" * 5 + "|"]
    for fname, by_method in results.items():
        sgd = best(by_method["sgd"])
        per = {m: versus_sgd(best(by_method[m]), sgd) for m in ADAPTIVE}
        lines.append(f"| {fname} | " + " | ".join(per.values()) + f" | {claim_verdict(per)} |")
    return "\n".join(lines)


def report(results: dict[str, dict[str, list[Run]]]) -> str:
    parts = [main_table(results), verdict_table(results)]
    if "saddle" in results:
        parts.append(saddle_table(results["saddle"]))
    parts += [ravine_table(f, results[f]) for f in ("ravine", "ravine45") if f in results]
    return "\n\n".join(parts)


def draw(results: dict[str, dict[str, list[Run]]], out: Path) -> None:
    """Top row: each method's path at its best rate over contours of f; bottom row: f - f* per step (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(
        2, len(names), figsize=(5.2 * len(names), 9.0), squeeze=False, gridspec_kw={"height_ratios": [3, 2]}
    )
    for col, fname in enumerate(names):
        fn = FUNCTIONS[fname]
        ax, ax_gap = axes[0, col], axes[1, col]
        gx, gy = np.meshgrid(np.linspace(*fn.xlim, 300), np.linspace(*fn.ylim, 300))
        z = fn.f(torch.from_numpy(gx), torch.from_numpy(gy)).numpy() - fn.f_min
        levels = np.logspace(-1, 3, 13) if fn.log_contours else 20
        ax.contour(gx, gy, z, levels=levels, colors="0.75", linewidths=0.7)
        for method, runs in results[fname].items():
            b = best(runs)
            label = f"{method} (lr {b.lr:.3g})"
            ax.plot(b.path[:, 0], b.path[:, 1], "-", color=COLORS[method], lw=1.4, label=label, marker=".", ms=2.5)
            ax_gap.semilogy(np.maximum(b.gap, 1e-16), color=COLORS[method], lw=1.4, label=method)
        ax.plot(*fn.start, "ko", ms=6)
        ax.plot(*fn.minimum, "k*", ms=12)
        ax.set(xlim=fn.xlim, ylim=fn.ylim, title=f"{fn.title}\n{fn.steps} steps", xlabel="x", ylabel="y")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="best")
        ax_gap.axhline(THRESHOLD, color="0.5", ls=":", lw=1)
        ax_gap.set(xlabel="step", ylabel=r"$f - f^*$", ylim=(1e-16, None))
        ax_gap.grid(True, which="major", alpha=0.3)
    fig.suptitle("Optimizer paths from configs/optimizer/*.yaml, each at its best learning rate of a 16-value grid")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("optimizer_paths.png"))
    parser.add_argument("--table", action="store_true", help="also print the tables of results.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # 2-element tensors: threads only add overhead
    results = sweep()
    draw(results, args.out)
    print(f"wrote {args.out}")
    if args.table:
        print(report(results))


if __name__ == "__main__":
    main()
