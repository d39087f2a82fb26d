"""1 vs R test passes, paired: every FMP run is scored both ways on the same images with the same weights, so the
gain of averaging R passes (``test/acc``) over one pass (``test/acc_single_pass``) is a paired difference per run.

    python experiments/fractional_max_pooling/test_passes.py logs/multiruns/fractional_max_pooling_cpu [MORE ...]

Several sweep folders are read as one set of runs (e.g. each pooling mode swept into its own folder).

Prints a Markdown table: per setting (seeds pooled, as ``python -m ablate.table`` names rows) and over all completed
runs, the mean gain in points, its std, n and the paired t-test's two-sided p (scipy.stats.ttest_rel). The table
tool's Welch test compares rows, not two metrics of the same run, hence this script.

Then one line per run: McNemar's exact test of 1 vs R passes on that run's test images (results.json
``test_passes``: the images only the R-pass average got right, b, and only the single pass got right, c; two-sided
binomial test of b against b + c at 1/2, scipy.stats.binomtest), Holm-corrected over the runs.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from scipy.stats import binomtest, ttest_rel

from ablate.report import build, load_all
from ablate.report.significance import holm

SINGLE, AVERAGED = "test/acc_single_pass", "test/acc"


def paired_rows(roots: list[Path]) -> list[tuple[str, list[float], list[float]]]:
    """(setting, single-pass accuracies, averaged accuracies) per row, then "all runs"; completed runs only."""
    rows = build(load_all(roots), [SINGLE, AVERAGED])
    out = []
    for row in rows:
        done = [r for r in row.runs if r.status == "completed" and r.metric(SINGLE) is not None]
        out.append((row.setting, [r.metric(SINGLE) for r in done], [r.metric(AVERAGED) for r in done]))
    out.append(("all runs", [v for _, s, _ in out for v in s], [v for _, _, a in out for v in a]))
    return out


def line(setting: str, single: list[float], averaged: list[float]) -> str:
    gains = [100 * (a - s) for s, a in zip(single, averaged, strict=True)]
    if len(gains) < 2:
        return f"| {setting} | {len(gains)} | {gains[0]:+.2f} | - | - |" if gains else f"| {setting} | 0 | - | - | - |"
    p = ttest_rel(averaged, single).pvalue
    return f"| {setting} | {len(gains)} | {statistics.fmean(gains):+.2f} | {statistics.stdev(gains):.2f} | {p:.3g} |"


def mcnemar_lines(roots: list[Path]) -> list[str]:
    """One line per completed run with McNemar counts: setting, seed, b, c, exact p, Holm-adjusted p, the result."""
    runs = [r for r in load_all(roots) if r.status == "completed" and r.data.get("test_passes")]
    if not runs:
        return []
    counts = [(r, r.data["test_passes"]) for r in sorted(runs, key=lambda r: (" ".join(r.overrides), str(r.seed)))]
    pvalues = []
    for _, tp in counts:
        b, c = int(tp["only_averaged_right"]), int(tp["only_single_right"])
        pvalues.append(binomtest(b, b + c, 0.5).pvalue if b + c else 1.0)
    lines = [
        "| run | images | R | only R passes right (b) | only 1 pass right (c) | McNemar p | p (Holm) | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (run, tp), p, p_holm in zip(counts, pvalues, holm(pvalues), strict=True):
        b, c = tp["only_averaged_right"], tp["only_single_right"]
        result = ("R passes better" if b > c else "1 pass better") if p_holm < 0.05 else "n.s."
        name = " ".join(o for o in run.overrides if not o.startswith("experiment="))
        lines.append(f"| {name} | {tp['images']} | {tp['passes']} | {b} | {c} | {p:.3g} | {p_holm:.3g} | {result} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", type=Path, nargs="+", metavar="root", help="the sweep folder(s)")
    args = p.parse_args(argv)
    rows = paired_rows(args.roots)
    if not rows[-1][1]:
        raise SystemExit(f"error: no completed run with {SINGLE} under {' '.join(map(str, args.roots))}")
    print(f"| setting | n | gain of R passes ({AVERAGED} - {SINGLE}), points | std | p (paired t) |")
    print("|---|---|---|---|---|")
    print("\n".join(line(*r) for r in rows))
    per_run = mcnemar_lines(args.roots)
    if per_run:
        print("\nPer run, McNemar's exact test of 1 vs R passes (same weights, same images), Holm over the runs:\n")
        print("\n".join(per_run))


if __name__ == "__main__":
    main()
