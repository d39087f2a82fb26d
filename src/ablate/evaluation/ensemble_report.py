"""evaluate.py's human-readable outputs: a Markdown table of members and ensemble, and the ensemble-size plot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

COLUMNS = ("test/acc", "test/acc_mc", "test/acc_tta", "test/acc_top5", "test/nll", "test/ece")


def _label(run_dir: str, run_dirs: list[str]) -> str:
    """Run folders relative to their common parent (a sweep's job numbers), or the folder name for one run."""
    if len(set(run_dirs)) < 2:
        return Path(run_dir).name
    return os.path.relpath(run_dir, os.path.commonpath(run_dirs))


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


def write_markdown(results: dict[str, Any], path: Path) -> None:
    members, metrics = results["members"], results["metrics"]
    selection, ensemble = results["selection"], results["ensemble"]
    columns = [c for c in COLUMNS if c in metrics]
    metric = selection["metric"]
    run_dirs = [m["run_dir"] for m in members]
    lines = [
        f"# Ensemble of {ensemble['size']} runs ({ensemble['space']} average), members ordered by {metric}",
        "",
        "| member | run | weights | " + " | ".join([metric, *columns]) + " |",
        "|---" * (4 + len(columns)) + "|",
    ]
    for i, m in enumerate(members, 1):
        cells = [_fmt(m["selection"].get(metric)), *(_fmt(m["metrics"].get(c)) for c in columns)]
        run = _label(m["run_dir"], run_dirs)
        run = f"{m['label']} ({run})" if m.get("label") and m["label"] != run else run  # its overrides, and folder
        lines.append(f"| {i} | {run} | {m['weights']} | " + " | ".join(cells) + " |")
    lines.append("| **ensemble** | | | | " + " | ".join(f"**{_fmt(metrics[c])}**" for c in columns) + " |")
    lines += ["", "Ensemble of the first k members:", "", "| k | " + " | ".join(columns) + " |"]
    lines.append("|---" * (1 + len(columns)) + "|")
    for point in results["ensemble_size_curve"]:
        lines.append(f"| {point['members']} | " + " | ".join(_fmt(point.get(c)) for c in columns) + " |")
    lines += [f"\nWarning: {w}" for w in results.get("warnings", [])]
    if selection["skipped"]:
        skipped = ", ".join(f"{s['run_dir']} ({s['status']})" for s in selection["skipped"])
        lines += ["", f"Skipped (not completed): {skipped}"]
    path.write_text("\n".join(lines) + "\n")


def plot_curve(results: dict[str, Any], path: Path) -> None:
    """Ensemble test accuracy vs number of members (added best validation first), members' own accuracy as dots."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    curve, members = results["ensemble_size_curve"], results["members"]
    ks = [p["members"] for p in curve]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    lines = (("test/acc", "ensemble"), ("test/acc_mc", "ensemble, MC dropout"), ("test/acc_tta", "ensemble, flip TTA"))
    for key, label in lines:
        if key in curve[0]:
            ax.plot(ks, [p[key] for p in curve], marker="o", label=label)
    ax.scatter(ks, [m["metrics"]["test/acc"] for m in members], color="grey", marker="x", label="member k alone")
    ax.set_xlabel(f"members (best {results['selection']['metric']} first)")
    ax.set_ylabel("test accuracy")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
