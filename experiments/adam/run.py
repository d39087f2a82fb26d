"""Kingma & Ba 2015, Fig. 2 (a) at CPU scale, as the paper ran it: each optimizer at its best learning rate.

1. Grid: every optimizer over its 5-point learning-rate grid (declared below, a decade either side of its default in
   half-decade steps), one selection seed (100) that the final runs do not use.
2. Selection on the claim's own metric: the final training cost (``train/loss`` of the last epoch, dropout on, as
   the paper's curves); never a test number.
3. Final: seeds 0, 1, 2 at each optimizer's selected rate, into ``logs/multiruns/adam_cpu/<optimizer>``, for the
   table and its verdict (experiments/adam/README.md).

``--epochs N`` runs grid, selection and final runs at N epochs instead of the config's 10, into their own folders
(``adam_cpu_<N>ep_grid``, ``adam_cpu_<N>ep``) and selection table (``grid_<N>ep.md``): the selection is redone at the
run length the verdict is read at, since the best rate for 10 epochs need not be the best for 50.

Rerunning continues: finished sweeps are skipped by train.py (issue 18: sweeps survive an interruption).

    python experiments/adam/run.py [--epochs 50] [--concurrent] [--dry-run]
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


def sweep_command(
    optimizer: str, lrs: str, seeds: str, folder: Path, epochs: int | None, jobs: int | None
) -> list[str]:
    return [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        "experiment=adam_cpu",
        f"optimizer={optimizer}",
        f"optimizer.lr={lrs}",
        f"seed={seeds}",
        *([f"trainer.max_epochs={epochs}"] if epochs else []),
        f"hydra.sweep.dir={folder}",
        # hydra.* keys do not enter the job folders' names; one job: torch would take every core, and five sweeps of
        # 2-thread jobs on 2 cores ran ~6x slower than 1-thread ones (OpenMP threads wait on each other)
        *([f"hydra.launcher.n_jobs={jobs}", "torch_threads=1"] if jobs else []),
    ]


def run_stage(commands: list[list[str]], concurrent: bool, dry_run: bool) -> None:
    """One sweep after another (each with the config's 2 jobs), or all at once with 1 job of 1 thread each: five sweeps
    of 5 or 3 jobs at 2 at a time leave a core idle for each sweep's last job; at once, both cores stay busy to the
    end."""
    for cmd in commands:
        print(" ".join(cmd[1:]), flush=True)
    if dry_run:
        return
    if not concurrent:
        for cmd in commands:
            check(cmd, subprocess.run(cmd, cwd=REPO).returncode)
        return
    running = []
    for cmd in commands:
        log = Path(next(a for a in cmd if a.startswith("hydra.sweep.dir=")).split("=", 1)[1] + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out:  # each sweep's progress in <sweep folder>.log, not interleaved on the terminal
            running.append((cmd, subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)))
    for cmd, process in running:
        check(cmd, process.wait())


def check(cmd: list[str], code: int) -> None:
    if code not in (0, 1):  # 1: a job diverged (a learning rate too high for this optimizer: it counts as +inf)
        raise SystemExit(f"error: {' '.join(cmd[1:])} exited {code}")


def final_train_loss(run: Path) -> float:
    """The last epoch's train/loss; a failed or diverged run is +inf (never selected)."""
    results = json.loads((run / "results.json").read_text())
    if results.get("status") != "completed":
        return float("inf")
    return float(results["metrics"].get("train/loss", float("inf")))


def select(grid: Path, optimizer: str) -> tuple[float, list[tuple[float, float]]]:
    rows = []
    for run in sorted((grid / optimizer).glob("*/results.json")):
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
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the config's 10)")
    parser.add_argument(
        "--concurrent",
        action="store_true",
        help="run each stage's five sweeps at once, 1 job of 1 thread each (logs: <sweep>.log)",
    )
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be a positive number of epochs, got {args.epochs}")
    tag = f"_{args.epochs}ep" if args.epochs else ""
    grid, final = LOGS / f"adam_cpu{tag}_grid", LOGS / f"adam_cpu{tag}"
    jobs = 1 if args.concurrent else None
    grid_sweeps = [
        sweep_command(o, ",".join(map(str, lrs)), str(SELECTION_SEED), grid / o, args.epochs, jobs)
        for o, lrs in GRID.items()
    ]
    run_stage(grid_sweeps, args.concurrent, args.dry_run)
    if args.dry_run:
        return
    chosen = {}
    lines = ["| optimizer | lr: final train/loss (seed 100) | selected lr |", "|---|---|---|"]
    for optimizer in GRID:
        best, rows = select(grid, optimizer)
        chosen[optimizer] = best
        cells = ", ".join(f"{lr:g}: {loss:.4f}" for lr, loss in rows)
        lines.append(f"| {optimizer} | {cells} | **{best:g}** |")
    (REPO / "experiments" / "adam" / f"grid{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    final_sweeps = [sweep_command(o, str(lr), FINAL_SEEDS, final / o, args.epochs, jobs) for o, lr in chosen.items()]
    run_stage(final_sweeps, args.concurrent, False)


if __name__ == "__main__":
    main()
