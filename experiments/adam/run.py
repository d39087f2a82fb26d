"""Kingma & Ba 2015, Fig. 2 (a) at CPU scale, as the paper ran it: each optimizer at its best learning rate.

1. Grid: every optimizer over its 5-point learning-rate grid (declared below, a decade either side of its default in
   half-decade steps), one selection seed (100) that the final runs do not use.
2. Selection on the claim's own metric: the final training cost (``train/loss`` of the last epoch, dropout on, as
   the paper's curves); never a test number.
3. Final: seeds 0, 1, 2 at each optimizer's selected rate, into ``logs/multiruns/adam_cpu/<optimizer>``, for the
   table and its verdict (experiments/adam/README.md).

Rerunning continues: finished sweeps are skipped by train.py (issue 18: sweeps survive an interruption).

    python experiments/adam/run.py [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOGS = REPO / "logs" / "multiruns"
SELECTION_SEED = 100
FINAL_SEEDS = "0,1,2"
GRID: dict[str, list[float]] = {  # declared before any run: default x {0.1, 0.3, 1, 3, 10}, rounded
    "adagrad": [0.001, 0.003, 0.01, 0.03, 0.1],
    "rmsprop": [0.0001, 0.0003, 0.001, 0.003, 0.01],
    "nesterov": [0.005, 0.015, 0.05, 0.15, 0.5],
    "adadelta": [0.1, 0.3, 1.0, 3.0, 10.0],
    "adam": [0.0001, 0.0003, 0.001, 0.003, 0.01],
}


def sweep(optimizer: str, lrs: str, seeds: str, folder: Path, dry_run: bool) -> None:
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        "experiment=adam_cpu",
        f"optimizer={optimizer}",
        f"optimizer.lr={lrs}",
        f"seed={seeds}",
        f"hydra.sweep.dir={folder}",
    ]
    print(" ".join(cmd[1:]), flush=True)
    if dry_run:
        return
    code = subprocess.run(cmd, cwd=REPO).returncode
    if code not in (0, 1):  # 1: a job diverged (a learning rate too high for this optimizer: it counts as +inf)
        raise SystemExit(f"error: {' '.join(cmd[1:])} exited {code}")


def final_train_loss(run: Path) -> float:
    """The last epoch's train/loss; a failed or diverged run is +inf (never selected)."""
    results = json.loads((run / "results.json").read_text())
    if results.get("status") != "completed":
        return float("inf")
    return float(results["metrics"].get("train/loss", float("inf")))


def select(optimizer: str) -> tuple[float, list[tuple[float, float]]]:
    rows = []
    for run in sorted((LOGS / "adam_cpu_grid" / optimizer).glob("*/results.json")):
        results = json.loads(run.read_text())
        lr = float(results["config"]["optimizer"]["lr"]) if "config" in results else None
        if lr is None:
            lr = float(next(o.split("=", 1)[1] for o in results["overrides"] if o.startswith("optimizer.lr=")))
        rows.append((lr, final_train_loss(run.parent)))
    if not rows:
        raise SystemExit(f"no grid runs for {optimizer}")
    return min(rows, key=lambda r: r[1])[0], sorted(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    for optimizer, lrs in GRID.items():
        sweep(optimizer, ",".join(map(str, lrs)), str(SELECTION_SEED), LOGS / "adam_cpu_grid" / optimizer, args.dry_run)
    if args.dry_run:
        return
    chosen = {}
    lines = ["| optimizer | lr: final train/loss (seed 100) | selected lr |", "|---|---|---|"]
    for optimizer in GRID:
        best, rows = select(optimizer)
        chosen[optimizer] = best
        cells = ", ".join(f"{lr:g}: {loss:.4f}" for lr, loss in rows)
        lines.append(f"| {optimizer} | {cells} | **{best:g}** |")
    (REPO / "experiments" / "adam" / "grid.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    for optimizer, lr in chosen.items():
        sweep(optimizer, str(lr), FINAL_SEEDS, LOGS / "adam_cpu" / optimizer, False)


if __name__ == "__main__":
    main()
