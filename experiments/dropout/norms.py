"""Is max-norm active? The largest and median incoming-weight L2 norm of each hidden layer's units, per run.

    python experiments/dropout/norms.py logs/multiruns/dropout_cpu [--c 3]

Reads each run's ``checkpoints/last.ckpt`` (the final weights, through the checksum-verifying loader) and prints one
Markdown row per run: per hidden layer ``max / median`` of ``weight.norm(dim=1)`` (a unit's incoming weights), and
whether any unit sits at the constraint ``c`` (within 1e-3), i.e. whether max-norm did anything to that run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ablate.report import load_runs
from ablate.training.checkpoint_io import load_verified


def hidden_norms(state_dict: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Per hidden linear layer (every 2-D weight but the last, the classifier), the norm of each unit's weights."""
    weights = [v for k, v in state_dict.items() if k.endswith("weight") and v.ndim == 2]
    return [w.norm(dim=1) for w in weights[:-1]]


def rows(root: Path, c: float) -> list[str]:
    lines = []
    for run in sorted(load_runs(root), key=lambda r: r.path.parent.name):
        ckpt = run.path.parent / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            continue
        norms = hidden_norms(load_verified(ckpt)["state_dict"])
        cells = [f"{n.max():.2f} / {n.median():.2f}" for n in norms]
        if not all(torch.isfinite(n).all() for n in norms):
            binds = "non-finite"
        else:
            binds = "yes" if any(bool((n >= c - 1e-3).any()) for n in norms) else "no"
        setting = " ".join(o for o in run.overrides if not o.startswith("experiment="))
        lines.append(f"| {setting} | {run.status} | {' | '.join(cells)} | {binds} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="a sweep folder (or one run)")
    p.add_argument("--c", type=float, default=3.0, help="the max-norm constraint to test against (default 3)")
    args = p.parse_args(argv)
    lines = rows(args.root, args.c)
    if not lines:
        raise SystemExit(f"error: no run with checkpoints/last.ckpt under {args.root}")
    layers = lines[0].count("|") - 4
    header = " | ".join(f"layer {i + 1} max / median" for i in range(layers))
    print(f"| run | status | {header} | any unit at or above c |")
    print("|---" * (layers + 3) + "|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
