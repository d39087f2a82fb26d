"""Summary table of experiments/ensembles: single model vs ensemble/average per method, with the cost.

    python experiments/ensembles/summary.py [logs/multiruns/ensembles_fmnist] [logs/evaluations/ensembles_fmnist]

Reads the runs' results.json (train.py) and the evaluations' results.json (evaluate.py) and prints one Markdown row
per method: mean ± sample std over seeds (runs) or over ensembles (evaluations). `ablate.report.table` gives the
per-metric tables; this script only adds what it does not hold: which metric names are the "ensemble" of each method,
the paired gain, and the time: `fit_time_s` (training, validation included) and `wall_time_s - fit_time_s` (the test
pass and the ensemble's scoring), results.json fields rather than metrics.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

# ensemble.name -> suffix of its ensemble/average metrics (test/acc<suffix>, test/nll<suffix>, test/ece<suffix>)
SUFFIX = {"none": None, "snapshot": "_snapshot_ens", "nocycle": "_snapshot_ens", "ema": "_ema", "swa": "_swa"}
LABEL = {
    "none": "(a) single model, step schedule",
    "snapshot": "(b) snapshot ensemble",
    "nocycle": "(c) NoCycle snapshots (step schedule)",
    "ema": "(d) EMA of the weights (step schedule)",
    "swa": "(e) SWA",
}
# overrides that make a variant of a method (a row of its own)
SETTING_KEYS = ("trainer.max_epochs", "ensemble.cycles", "ensemble.decay", "optimizer.lr")


def ms(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    values = [v * scale for v in values]
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def triple(metrics: dict[str, float], suffix: str = "") -> tuple[float, float, float]:
    return metrics[f"test/acc{suffix}"], metrics[f"test/nll{suffix}"], metrics[f"test/ece{suffix}"]


def spread(values: list[float]) -> str:
    """median (min-max): on a shared machine the mean of wall times says little; the minimum is the least disturbed."""
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def row(
    label: str,
    n: int,
    epochs: str,
    times: tuple[list[float], list[float]],
    single: list[tuple],
    ens: list[tuple] | None,
    gain: list[float],
) -> str:
    cells = [label, str(n), epochs, spread(times[0]), f"{statistics.median(times[1]):.1f}"]
    cells += [ms([s[0] for s in single], 100), ms([s[1] for s in single], 1, 4), ms([s[2] for s in single], 1, 4)]
    if ens:
        cells += [ms([e[0] for e in ens], 100), ms([e[1] for e in ens], 1, 4), ms([e[2] for e in ens], 1, 4)]
    else:
        cells += ["", "", ""]
    cells.append(ms(gain, 100))
    return "| " + " | ".join(cells) + " |"


def main(runs_root: Path, evals_root: Path) -> str:
    groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = defaultdict(list)
    by_dir: dict[Path, dict[str, Any]] = {}
    for path in sorted(runs_root.rglob("results.json")):
        data = load(path)
        if data.get("status") != "completed":
            continue
        by_dir[path.parent.resolve()] = data
        name = data["config"]["ensemble"]["name"]
        variant = tuple(o for o in data["overrides"] if o.split("=")[0] in SETTING_KEYS)
        groups[(name, variant)].append(data)

    lines = [
        "| method | n | epochs | train s, median (min-max) | test s | single acc (%) | single NLL | single ECE "
        "| ens./avg. acc (%) | ens./avg. NLL | ens./avg. ECE | Δ acc (pts) |",
        "|---" * 12 + "|",
    ]
    order = list(SUFFIX)
    rows: list[tuple[tuple, str]] = []

    def sort_key(item: tuple[tuple[str, tuple[str, ...]], list[dict[str, Any]]]) -> tuple:
        (name, variant), runs = item
        return (runs[0]["epochs"], order.index(name), runs[0]["config"]["ensemble"].get("cycles") or 0, variant)

    for (name, variant), runs in sorted(groups.items(), key=sort_key):
        runs = sorted(runs, key=lambda d: d["seed"])
        if name == "none":
            runs = [d for d in runs if d["seed"] in (0, 1, 2)]  # seeds 3-8 are (f)'s extra members
        suffix, ens_cfg, summary = SUFFIX[name], runs[0]["config"]["ensemble"], runs[0].get("ensemble", {})
        label = LABEL[name]
        if name in ("snapshot", "nocycle"):
            label += f", M={ens_cfg['cycles']}"
        elif name == "ema":
            label += f", decay {ens_cfg['decay']}"
        elif name == "swa":
            label += f", averages epochs {summary['swa_start_epoch']}-{runs[0]['epochs'] - 1}"
        label += "".join(f", lr {o.split('=')[1]}" for o in variant if o.startswith("optimizer.lr="))
        single = [triple(d["metrics"]) for d in runs]
        ens = [triple(d["metrics"], suffix) for d in runs] if suffix else None
        gain = [e[0] - s[0] for e, s in zip(ens, single, strict=True)] if ens else []
        times = ([d["fit_time_s"] for d in runs], [d["wall_time_s"] - d["fit_time_s"] for d in runs])
        rows.append(
            (sort_key(((name, variant), runs)), row(label, len(runs), str(runs[0]["epochs"]), times, single, ens, gain))
        )

    evaluations = [load(p) for p in sorted(evals_root.rglob("results.json"))] if evals_root.is_dir() else []
    if evaluations:
        sizes = {e["ensemble"]["size"] for e in evaluations}
        members = [m for e in evaluations for m in e["members"]]
        # cost of one ensemble: its members' training (fit) time; testing it is the evaluate.py pass
        fit = [sum(by_dir[Path(m["run_dir"]).resolve()]["fit_time_s"] for m in e["members"]) for e in evaluations]
        times = (fit, [e["wall_time_s"] for e in evaluations])
        single = [triple(m["metrics"]) for m in members]
        ens = [triple(e["metrics"]) for e in evaluations]
        epochs = "+".join(str(by_dir[Path(m["run_dir"]).resolve()]["epochs"]) for m in evaluations[0]["members"])
        label = f"(f) {'/'.join(map(str, sorted(sizes)))} independent seeds, evaluate.py (n = ensembles)"
        # single: mean ± std over all members; the gain pairs each ensemble with its own members' mean accuracy
        gain = [
            e["metrics"]["test/acc"] - statistics.mean(m["metrics"]["test/acc"] for m in e["members"])
            for e in evaluations
        ]
        key = (by_dir[Path(members[0]["run_dir"]).resolve()]["epochs"], len(order), 0, ())  # after its epochs' rows
        rows.append((key, row(label, len(evaluations), epochs, times, single, ens, gain)))
    lines += [text for _, text in sorted(rows, key=lambda r: r[0])]
    return "\n".join(lines)


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]]
    runs_root = args[0] if args else Path("logs/multiruns/ensembles_fmnist")
    evals_root = args[1] if len(args) > 1 else Path("logs/evaluations/ensembles_fmnist")
    print(main(runs_root, evals_root))
