"""Random vs grid search: best validation accuracy found vs number of trials, over search seeds.

Reads every study ``<searches>/<prefix>-<sampler>-s<seed>/`` that ``run.sh`` made (one ``<trial>/results.json`` per
trial, trial number = the order the sampler proposed it), draws best-val-acc-so-far vs trials (mean over search
seeds, band = min..max) and refreshes the generated part of ``results.md`` (between the ``analyse.py`` markers; the
hand-written discussion around it is kept).

    python experiments/random_vs_grid/analyse.py [--searches logs/searches] [--out-dir experiments/random_vs_grid]

Selection uses validation only: "the selected trial after n trials" is the first trial with the highest
``val/acc_best`` among trials 0..n-1 (Optuna's ``best_trial`` rule); its ``test/acc`` is reported, never maximised.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PARAMS = ("optimizer.lr", "optimizer.weight_decay", "reg.dropout")
TITLES = {"rvg": "MLP on digits, AdamW, 5 epochs", "rvg-sgd": "MLP on digits, plain SGD, 5 epochs"}


@dataclass
class Trial:
    number: int
    params: dict[str, float]
    val: float  # -inf for a failed trial: it spends budget and finds nothing
    test: float
    wall_s: float
    started: datetime | None
    ended: datetime | None


def _time(stamp: str | None) -> datetime | None:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z") if stamp else None


def load_study(study_dir: Path) -> list[Trial]:
    trials = []
    for path in sorted(study_dir.glob("*/results.json"), key=lambda p: int(p.parent.name)):
        record = json.loads(path.read_text())
        metrics = record.get("metrics") or {}
        ok = record.get("status") == "completed" and "val/acc_best" in metrics
        overrides = dict(o.split("=", 1) for o in record.get("overrides", []) if "=" in o)
        trials.append(
            Trial(
                number=int(path.parent.name),
                params={k: float(overrides[k]) for k in PARAMS if k in overrides},
                val=float(metrics["val/acc_best"]) if ok else -math.inf,
                test=float(metrics.get("test/acc", math.nan)) if ok else math.nan,
                wall_s=float(record.get("wall_time_s") or 0.0),
                started=_time(record.get("started_at")),
                ended=_time(record.get("heartbeat_at")),
            )
        )
    numbers = [t.number for t in trials]
    if numbers != list(range(len(trials))):
        raise SystemExit(f"error: {study_dir} has trials {numbers}; expected 0..n-1 (an interrupted search?)")
    return trials


def best_so_far(trials: list[Trial]) -> list[Trial]:
    """The selected trial after 1, 2, ... n trials: the first with the highest val/acc_best so far."""
    out, best = [], None
    for t in trials:
        if best is None or t.val > best.val:
            best = t
        out.append(best)
    return out


def load_all(searches: Path, prefix: str) -> dict[str, dict[int, list[Trial]]]:
    studies: dict[str, dict[int, list[Trial]]] = {}
    pattern = re.compile(rf"^{re.escape(prefix)}-(?P<sampler>\w+)-s(?P<seed>\d+)$")
    for d in sorted(searches.iterdir()):
        m = pattern.match(d.name)
        if m and d.is_dir() and (trials := load_study(d)):
            studies.setdefault(m["sampler"], {})[int(m["seed"])] = trials
    if not studies:
        raise SystemExit(f"error: no {prefix}-<sampler>-s<seed> studies in {searches}; run run.sh first")
    return studies


def _mean_std(values: list[float], scale: float = 100.0) -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def main_effects(trials: list[Trial]) -> dict[str, dict[float, tuple[float, int]]]:
    """(mean val/acc_best of the completed trials, failed trials) per value of each parameter over a full grid."""
    effects: dict[str, dict[float, tuple[float, int]]] = {}
    for key in PARAMS:
        effects[key] = {}
        for lv in sorted({t.params[key] for t in trials}):
            vals = [t.val for t in trials if t.params[key] == lv]
            done = [v for v in vals if v > -math.inf]
            effects[key][lv] = (statistics.fmean(done) if done else math.nan, len(vals) - len(done))
    return effects


def draw(studies: dict[str, dict[int, list[Trial]]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    colors = {"random": "#d62728", "grid": "#1f77b4", "tpe": "#2ca02c"}
    fig, (ax_val, ax_test) = plt.subplots(1, 2, figsize=(11, 4.2))
    low = 100.0  # the y axis starts below trial 3's worst value: the first trials' lows would squash the rest
    for sampler, by_seed in studies.items():
        curves = [best_so_far(trials) for trials in by_seed.values()]
        n = min(len(c) for c in curves)
        x = np.arange(1, n + 1)
        for ax, attr in ((ax_val, "val"), (ax_test, "test")):
            y = 100 * np.array([[getattr(t, attr) for t in c[:n]] for c in curves])
            color = colors.get(sampler)
            ax.plot(x, y.mean(0), color=color, lw=2, label=f"{sampler} (mean of {len(curves)} search seeds)")
            ax.fill_between(x, y.min(0), y.max(0), color=color, alpha=0.15, lw=0)
            low = min(low, float(np.nanmin(np.where(np.isfinite(y), y, np.nan)[:, min(2, n - 1) :])))
    ax_val.set(xlabel="trials", ylabel="best val/acc_best so far (%)", title="best validation accuracy found")
    ax_test.set(xlabel="trials", ylabel="test/acc of that trial (%)", title="test accuracy of the selected trial")
    for ax in (ax_val, ax_test):
        ax.set_ylim(math.floor(low - 0.5), None)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Random vs grid search, {title} (band: min..max over search seeds; y axis cut)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def report(studies: dict[str, dict[int, list[Trial]]], budgets: list[int], searches: Path) -> str:
    lines = [
        "| search | seeds | " + " | ".join(f"best val after {n}" for n in budgets) + " | test/acc of the selected trial"
        f" after {budgets[-1]} |",
        "|---" * (len(budgets) + 3) + "|",
    ]
    for sampler, by_seed in studies.items():
        curves = [best_so_far(t) for t in by_seed.values()]
        cells = []
        for n in budgets:
            vals = [c[n - 1].val for c in curves if len(c) >= n]
            cells.append(_mean_std(vals) if len(vals) == len(curves) else "n/a")
        tests = [c[min(budgets[-1], len(c)) - 1].test for c in curves]
        lines.append(f"| {sampler} | {len(curves)} | " + " | ".join(cells) + f" | {_mean_std(tests)} |")
    lines.append("")
    lines.append("Accuracies in %, mean ± std over search seeds. Per seed (after the last budget): ")
    lines.append("")
    lines.append("| study | selected trial | val/acc_best | test/acc | lr | weight decay | dropout | failed trials |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for sampler, by_seed in studies.items():
        for seed, trials in by_seed.items():
            sel = best_so_far(trials)[min(budgets[-1], len(trials)) - 1]
            p = sel.params
            failed = sum(1 for t in trials if t.val == -math.inf)
            lines.append(
                f"| {sampler}-s{seed} | {sel.number} | {100 * sel.val:.2f} | {100 * sel.test:.2f} | "
                f"{p.get('optimizer.lr', math.nan):.3g} | {p.get('optimizer.weight_decay', math.nan):.3g} | "
                f"{p.get('reg.dropout', math.nan):.3g} | {failed} |"
            )
    if "grid" in studies:
        grid = [t for trials in studies["grid"].values() for t in trials]
        lines += ["", f"Main effects over the full grid, all {len(studies['grid'])} grid studies pooled ({len(grid)} "]
        lines += ["trials; mean val/acc_best % per value, the other parameters averaged):", ""]
        for key, effect in main_effects(grid).items():
            cells = ", ".join(
                f"{lv:.3g}: {100 * v:.2f}" + (f" ({bad} failed)" if bad else "") for lv, (v, bad) in effect.items()
            )
            means = [v for v, _ in effect.values() if not math.isnan(v)]
            spread = 100 * (max(means) - min(means))
            lines.append(f"- `{key}`: {cells} (spread {spread:.2f} points)")
    if "random" in studies:
        pooled = [t for trials in studies["random"].values() for t in trials]
        lines += ["", f"Random trials pooled ({len(pooled)}), mean val/acc_best % by learning-rate decade:", ""]
        decades: dict[int, list[float]] = {}
        for t in pooled:
            decades.setdefault(math.floor(math.log10(t.params["optimizer.lr"])), []).append(t.val)
        for d, vals in sorted(decades.items()):
            done = [v for v in vals if v > -math.inf]
            stats = f"{100 * statistics.fmean(done):.2f} (max {100 * max(done):.2f}, " if done else "- ("
            failed = f", {len(vals) - len(done)} failed)" if len(done) < len(vals) else ")"
            lines.append(f"- lr in [1e{d}, 1e{d + 1}): {stats}{len(vals)} trials{failed}")
    # Compute: the trials' own wall time and each study's span (first start to last heartbeat).
    all_trials = [t for by_seed in studies.values() for trials in by_seed.values() for t in trials]
    trial_wall = [t.wall_s for t in all_trials]
    spans = []
    for by_seed in studies.values():
        for trials in by_seed.values():
            if trials[0].started and trials[-1].ended:
                spans.append((trials[-1].ended - trials[0].started).total_seconds())
    lines += [
        "",
        f"Compute: {len(all_trials)} trials in {len(spans)} studies; train.py's own wall time per trial "
        f"{statistics.fmean(trial_wall):.1f} s on average ({sum(trial_wall) / 60:.1f} min in all); "
        f"studies took {min(spans):.0f}-{max(spans):.0f} s each ({sum(spans) / 60:.1f} min in all, "
        "the sweeper's per-job overhead included), run one after another.",
        f"Hardware: {platform.machine()} CPU, {_cpu_model()}, {_nproc()} cores shared with other jobs; "
        f"torch {_torch_version()}, 1 torch thread per trial. Studies read from `{_rel(searches)}`.",
    ]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _nproc() -> int:
    import os

    return os.cpu_count() or 1


def _torch_version() -> str:
    import torch

    return torch.__version__


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def write_results(path: Path, generated: str, prefix: str) -> None:
    # One generated block per setting (prefix); everything outside the blocks is hand-written and kept.
    begin, end = f"<!-- analyse.py {prefix}:begin -->", f"<!-- analyse.py {prefix}:end -->"
    block = f"{begin}\n{generated}\n{end}"
    text = path.read_text() if path.exists() else "# Random vs grid search: results\n"
    if begin not in text or end not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(head + block + tail)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--searches", type=Path, default=REPO / "logs" / "searches")
    parser.add_argument("--prefix", default="rvg", help="studies <prefix>-<sampler>-s<seed>: rvg or rvg-sgd")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    parser.add_argument("--budgets", type=int, nargs="+", default=[5, 10, 20, 27])
    args = parser.parse_args(argv)
    studies = load_all(args.searches, args.prefix)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    suffix = args.prefix.removeprefix("rvg").strip("-")  # rvg -> best_vs_trials.png, rvg-sgd -> ..._sgd.png
    figure = args.out_dir / (f"best_vs_trials_{suffix}.png" if suffix else "best_vs_trials.png")
    draw(studies, figure, TITLES.get(args.prefix, args.prefix))
    generated = report(studies, args.budgets, args.searches)
    write_results(args.out_dir / "results.md", generated, args.prefix)
    print(generated)
    print(f"wrote {figure} and {args.out_dir / 'results.md'}")


if __name__ == "__main__":
    main()
