"""The search space of the random-vs-grid experiment, fixed before any run, and the per-seed shifted grid.

Prints the Hydra sweep overrides of one search, one per line (no spaces, so ``$(...)`` in a shell works too):

    python experiments/random_vs_grid/space.py random --seed 3          # the ranges (the random sampler's space)
    python experiments/random_vs_grid/space.py grid --seed 3 [--cells 3]  # 3 values per dimension, shifted

Grid with a random offset: each dimension's range [lo, hi] (in its own scale: log10 for the learning rate and the
weight decay, linear for dropout) is cut into ``cells`` equal cells of width w; the grid takes lo + (k + u) * w for
k = 0 .. cells-1, with one offset u ~ U(0, 1) per dimension drawn from the search seed. u = 0.5 is the usual grid of
cell centres. Over seeds every point of a range is equally likely to be a grid value, so where the good band of a
hyperparameter lies cannot favour or disfavour the grid (the old design's fixed cell centres could).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dim:
    name: str  # the config key
    lo: float
    hi: float
    log: bool  # log10 scale (the random sampler draws log-uniformly, the grid is evenly spaced in log10)

    def random_override(self) -> str:
        interval = f"interval({self.lo:g},{self.hi:g})"
        return f"{self.name}=tag(log,{interval})" if self.log else f"{self.name}={interval}"

    def grid_values(self, offset: float, cells: int) -> list[float]:
        lo, hi = (math.log10(self.lo), math.log10(self.hi)) if self.log else (self.lo, self.hi)
        width = (hi - lo) / cells
        points = [lo + (k + offset) * width for k in range(cells)]
        return [float(f"{10**p if self.log else p:.4g}") for p in points]  # 4 digits: readable, well inside a cell


# Fixed up front (README "Search space"): lr from the paper's neural-network space (SGD's initial learning rate
# log-uniform in [0.001, 10]); weight decay and dropout are this project's default search space
# (configs/hparams_search/random.yaml), the "less important" dimensions of the paper's argument.
SPACE = (
    Dim("optimizer.lr", 1e-3, 10.0, log=True),
    Dim("optimizer.weight_decay", 1e-6, 1e-1, log=True),
    Dim("reg.dropout", 0.0, 0.6, log=False),
)


def grid_offsets(seed: int, dims: int = len(SPACE)) -> list[float]:
    """One offset in [0, 1) per dimension, from the search seed (numpy's PCG64, independent of Optuna's streams)."""
    return [float(u) for u in np.random.default_rng(seed).random(dims)]


def grid_space(seed: int, cells: int = 3) -> dict[str, list[float]]:
    return {d.name: d.grid_values(u, cells) for d, u in zip(SPACE, grid_offsets(seed), strict=True)}


def overrides(sampler: str, seed: int, cells: int = 3) -> list[str]:
    if sampler == "random":
        return [d.random_override() for d in SPACE]
    return [f"{name}=choice({','.join(f'{v:g}' for v in values)})" for name, values in grid_space(seed, cells).items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sampler", choices=("random", "grid"))
    parser.add_argument("--seed", type=int, required=True, help="the search seed (sets the grid's offset)")
    parser.add_argument("--cells", type=int, default=3, help="grid values per dimension (3: a 27-point grid)")
    args = parser.parse_args(argv)
    if args.cells < 1:
        parser.error(f"--cells must be >= 1, got {args.cells}; e.g. --cells 3")
    print("\n".join(overrides(args.sampler, args.seed, args.cells)))


if __name__ == "__main__":
    main()
