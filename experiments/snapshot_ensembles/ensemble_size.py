"""The ensemble-size curve (Huang et al. 2017, Figure 3): test accuracy of the last m snapshots' softmax average vs m.

    python experiments/snapshot_ensembles/ensemble_size.py logs/multiruns/snapshot_ensembles_cpu_100ep \
        logs/multiruns/snapshot_ensembles_cpu_100ep_snapshot --out experiments/snapshot_ensembles/ensemble_size.png

One line per setting that recorded ``test/acc_snapshot_ens<m>`` (snapshot and NoCycle rows), mean and ±1 std over
seeds; the single model (``ensemble=none``: ``test/acc``) as a horizontal band. Reads results.json files through the
same loader as ``python -m ablate.table``, so rows are named and pooled the same way.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ablate.report import build, load_all
from ablate.report.plots import _pyplot, _save
from ablate.report.stats import available_metrics, find_row

SIZE = re.compile(r"test/acc_snapshot_ens(\d+)")


def sizes(metrics: list[str]) -> list[int]:
    return sorted(int(m.group(1)) for m in map(SIZE.fullmatch, metrics) if m)


def draw(root: Path | list[Path], out: Path, single: str = "ensemble=none") -> list[tuple[str, list[float]]]:
    """Draw the figure from one sweep folder or several (the single model's and the ensembles', named alike as in
    the table); returns (setting, mean accuracy per ensemble size) for each line drawn."""
    roots = root if isinstance(root, list) else [root]
    runs = load_all(roots)
    ms = sizes(available_metrics(runs))
    if not ms:
        raise SystemExit(
            f"error: no test/acc_snapshot_ens<m> in the runs under {', '.join(map(str, roots))}; run the README's "
            "sweeps first"
        )
    metrics = ["test/acc", *(f"test/acc_snapshot_ens{m}" for m in ms)]
    rows = build(runs, metrics)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.0), layout="constrained")
    drawn = []
    for row in rows:
        stats = [row.stats[f"test/acc_snapshot_ens{m}"] for m in ms]
        if not all(s.n for s in stats):
            continue
        means = [100 * s.mean for s in stats]
        stds = [100 * s.std if s.n > 1 else 0.0 for s in stats]
        ax.errorbar(ms, means, yerr=stds, marker="o", capsize=3, label=f"{row.setting} (n={row.n})")
        drawn.append((row.setting, [s.mean for s in stats]))
    base = find_row(rows, single)
    if base is not None and base.stats["test/acc"].n:
        mean, std = 100 * base.stats["test/acc"].mean, 100 * base.stats["test/acc"].std
        ax.axhline(mean, color="k", linestyle="--", label=f"single model, {single} (n={base.n})")
        if base.stats["test/acc"].n > 1:
            ax.axhspan(mean - std, mean + std, color="k", alpha=0.08, linewidth=0)
    ax.set_xticks(ms)
    ax.set_xlabel("ensemble size m (the last m snapshots)")
    ax.set_ylabel("test/acc (%)")
    ax.set_title("snapshot ensemble size: mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    _save(fig, out)
    return drawn


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, nargs="+", help="the sweep folder(s): the single model's and the ensembles'")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("ensemble_size.png"))
    p.add_argument("--single", default="ensemble=none", help="the single-model setting (default: ensemble=none)")
    args = p.parse_args(argv)
    for setting, means in draw(args.root, args.out, args.single):
        print(f"{setting}: " + ", ".join(f"m={i + 1}: {100 * v:.2f}%" for i, v in enumerate(means)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
