"""Random vs grid search: the primary comparison (best val/acc_best after 27 trials, paired by search seed), the gate,
and best-so-far vs trials over search seeds.

Reads every study ``<searches>/<prefix>-<sampler>-s<seed>/`` that ``run.sh`` made (one ``<trial>/results.json`` per
trial, trial number = the order the sampler proposed it), draws best-val-so-far vs trials (mean ± std over search
seeds) and refreshes the generated part of ``results.md`` (between the ``analyse.py`` markers; the hand-written text
around it is kept).

    python experiments/random_vs_grid/analyse.py [--searches logs/searches] [--out-dir experiments/random_vs_grid]

Selection uses validation only: "the selected trial after n trials" is the first trial with the highest
``val/acc_best`` among trials 0..n-1 (Optuna's ``best_trial`` rule); its ``test/acc`` is reported, never maximised.
The statistics (paired t, TOST, minimum detectable effect) are ``ablate.report.verdicts.primary``'s, applied to one
"run" per search (its selected trial), so the verdict follows experiments/README.md's "Verdict rule" word for word.
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

from ablate.report.runs import Run
from ablate.report.stats import Row, Stat
from ablate.report.verdicts import Primary, compare, primary

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PARAMS = ("optimizer.lr", "optimizer.weight_decay", "reg.dropout")
SHORT = {"optimizer.lr": "lr", "optimizer.weight_decay": "wd", "reg.dropout": "dropout"}
METRIC = "val/acc_best"
# Declared before the runs (README "Primary comparison"): random search better than the grid by 1 point of best
# validation accuracy; equivalence margin ±0.5 points (issue 18); two-sided alpha 0.05.
EXPECTED, MARGIN, ALPHA = 0.01, 0.005, 0.05
# Gate (the paper's precondition, low effective dimensionality): over the grid trials, the learning rate's main-effect
# spread must be at least GATE_RATIO times that of each other dimension.
GATE_RATIO = 2.0
CHANCE = 0.1  # digits: 10 balanced classes; the score of a diverged trial in the main effects


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
        ok = record.get("status") == "completed" and METRIC in metrics
        overrides = dict(o.split("=", 1) for o in record.get("overrides", []) if "=" in o)
        trials.append(
            Trial(
                number=int(path.parent.name),
                params={k: float(overrides[k]) for k in PARAMS if k in overrides},
                val=float(metrics[METRIC]) if ok else -math.inf,
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


Studies = dict[str, dict[int, list[Trial]]]  # sampler -> search seed -> trials


def load_all(searches: Path, prefix: str) -> Studies:
    studies: Studies = {}
    pattern = re.compile(rf"^{re.escape(prefix)}-(?P<sampler>[a-z]+)-s(?P<seed>\d+)$")
    for d in sorted(searches.iterdir()):
        m = pattern.match(d.name)
        if m and d.is_dir() and (trials := load_study(d)):
            studies.setdefault(m["sampler"], {})[int(m["seed"])] = trials
    if not studies:
        raise SystemExit(f"error: no {prefix}-<sampler>-s<seed> studies in {searches}; run run.sh first")
    return {
        s: dict(sorted(by_seed.items())) for s, by_seed in sorted(studies.items(), key=lambda kv: kv[0] != "random")
    }


def selected(trials: list[Trial], budget: int) -> Trial:
    return best_so_far(trials)[min(budget, len(trials)) - 1]


def _rows(studies: Studies, budget: int, metric: str) -> list[Row]:
    """One Row per sampler whose "runs" are the searches' selected trials, keyed by search seed (the pairing)."""
    rows = []
    for sampler, by_seed in studies.items():
        runs, values = [], []
        for seed, trials in by_seed.items():
            sel = selected(trials, budget)
            value = sel.val if metric == METRIC else sel.test
            runs.append(
                Run(
                    path=Path(f"{sampler}-s{seed}/results.json"),
                    status="completed",
                    overrides=[],
                    metrics={metric: value},
                    seed=seed,
                )
            )
            values.append(value)
        setting = f"sampler={sampler}"
        rows.append(Row(setting=setting, key=frozenset({setting}), runs=runs, stats={metric: Stat(values)}))
    return rows


def comparison(studies: Studies, budget: int, metric: str = METRIC) -> Primary:
    """random vs grid on ``metric`` of the selected trial after ``budget`` trials: verdicts.primary (paired t when both
    samplers have the same search seeds, TOST within ±MARGIN, MDE)."""
    rows = _rows(studies, budget, metric)
    compare(rows, "sampler=grid", metric, alpha=ALPHA)
    return primary(rows, "sampler=random", EXPECTED, MARGIN, ALPHA)


def main_effects(trials: list[Trial]) -> dict[str, list[tuple[float, int]]]:
    """Per parameter, per grid level (0 = lowest value of its study, the offsets differ between studies): the mean
    val/acc_best with failed (diverged) trials at chance accuracy, and the number of failed trials."""
    effects: dict[str, list[tuple[float, int]]] = {}
    for key in PARAMS:
        levels = sorted({t.params[key] for t in trials})
        effects[key] = []
        for lv in levels:
            vals = [t.val for t in trials if t.params[key] == lv]
            # A diverged model predicts nothing better than chance; leaving it out would flatter a level that fails.
            scored = [v if v > -math.inf else CHANCE for v in vals]
            effects[key].append((statistics.fmean(scored), sum(v == -math.inf for v in vals)))
    return effects


def pooled_effects(grids: dict[int, list[Trial]]) -> dict[str, list[float]]:
    """Main effects per level index, averaged over the grid studies (a study's full 3^3 factorial each)."""
    per_study = [main_effects(trials) for trials in grids.values()]
    levels = {key: min(len(e[key]) for e in per_study) for key in PARAMS}
    return {key: [statistics.fmean(e[key][k][0] for e in per_study) for k in range(levels[key])] for key in PARAMS}


def _spread(values: list[float]) -> float:
    return max(values) - min(values)


def gate(studies: Studies, budget: int) -> tuple[bool, list[str]]:
    """The gates, on validation data: equal budgets (every search ran ``budget`` trials) and the paper's precondition,
    one dominant hyperparameter (the lr's main-effect spread over the grids >= GATE_RATIO x each other one's)."""
    lines = []
    short = [f"{s}-s{seed} ({len(t)})" for s, by in studies.items() for seed, t in by.items() if len(t) < budget]
    same_seeds = len({tuple(by) for by in studies.values()}) == 1
    ok_budget = not short and same_seeds
    lines.append(
        f"- Equal budgets, same search seeds: **{'pass' if ok_budget else 'FAIL'}** "
        + (f"(short: {', '.join(short)})" if short else f"(every search ran {budget} trials)")
        + ("" if same_seeds else "; the samplers' seeds differ")
    )
    ok_dim = False
    if "grid" in studies:
        effects = pooled_effects(studies["grid"])
        spreads = {key: 100 * _spread(v) for key, v in effects.items()}
        lr = spreads["optimizer.lr"]
        others = [v for k, v in spreads.items() if k != "optimizer.lr"]
        ok_dim = all(lr >= GATE_RATIO * o for o in others)
        cells = "; ".join(f"`{k}` {v:.1f}" for k, v in spreads.items())
        lines.append(
            f"- One dominant hyperparameter (the paper's precondition): main-effect spread over the grids, points of "
            f"val/acc_best: {cells}; lr >= {GATE_RATIO:g}x each other: **{'pass' if ok_dim else 'FAIL'}**"
        )
    return ok_budget and ok_dim, lines


def _pct(values: list[float]) -> str:
    values = [100 * v for v in values if math.isfinite(v)]
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "n/a"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def draw(studies: Studies, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    colors = {"random": "#d62728", "grid": "#1f77b4", "tpe": "#2ca02c"}
    fig, (ax_val, ax_test) = plt.subplots(1, 2, figsize=(11, 4.2))
    # The y axis spans trials 5.. (mean ± std): the first trials' lows and highs would squash the rest.
    low, high = 100.0, 0.0
    for sampler, by_seed in studies.items():
        curves = [best_so_far(trials) for trials in by_seed.values()]
        n = min(len(c) for c in curves)
        x = np.arange(1, n + 1)
        for ax, attr in ((ax_val, "val"), (ax_test, "test")):
            y = 100 * np.array([[getattr(t, attr) for t in c[:n]] for c in curves])
            y = np.where(np.isfinite(y), y, np.nan)  # a failed first trial has no value yet
            mean, std = np.nanmean(y, 0), np.nanstd(y, 0, ddof=1) if len(curves) > 1 else np.zeros(n)
            color = colors.get(sampler)
            ax.plot(x, mean, color=color, lw=2, label=f"{sampler} (mean ± std of {len(curves)} search seeds)")
            ax.fill_between(x, mean - std, np.minimum(mean + std, 100.0), color=color, alpha=0.15, lw=0)
            low = min(low, float(np.nanmin((mean - std)[min(4, n - 1) :])))
            high = max(high, float(np.nanmax((mean + std)[min(4, n - 1) :])))
    ax_val.set(xlabel="trials", ylabel="best val/acc_best so far (%)", title="best validation accuracy found")
    ax_test.set(xlabel="trials", ylabel="test/acc of that trial (%)", title="test accuracy of the selected trial")
    for ax in (ax_val, ax_test):
        ax.set_ylim(math.floor(low - 0.5), min(100.0, math.ceil(high + 0.5)))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Random vs grid search, {title} (band: ± 1 std over search seeds; y axis cut)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _cell(t: Trial | None) -> str:
    return f"{100 * t.val:.2f} / {100 * t.test:.2f}" if t else "n/a"


def _params(t: Trial) -> str:
    return ", ".join(f"{t.params.get(k, math.nan):.3g}" for k in PARAMS)


def report(studies: Studies, budgets: list[int], searches: Path) -> str:
    budget = budgets[-1]
    ok, gate_lines = gate(studies, budget)
    lines = ["**Gates** (validation data only; a failed gate replaces the verdict):", "", *gate_lines, ""]
    pairs = set(studies.get("random", {})) & set(studies.get("grid", {}))
    if len(pairs) < 2:
        lines.append(f"**Primary: no test yet**: {len(pairs)} search seed(s) with both samplers; needs 2+.")
    else:
        main = comparison(studies, budget)
        if ok:
            lines.append(main.line())
        else:
            lines.append(f"**Primary: no verdict**: a gate failed (the test would read: {main.line()})")
        test = comparison(studies, budget, "test/acc")
        ci = f"{100 * test.ci[0]:+.2f} to {100 * test.ci[1]:+.2f}"
        lines += [
            "",
            f"Beside it, not a verdict: test/acc of the selected trials, random - grid ({test.test}, "
            f"{test.n}): {100 * test.diff:+.2f} points (95% CI {ci}), p = {test.p:.3g}.",
        ]
    lines += [
        "",
        "| search | seeds | "
        + " | ".join(f"best val after {n}" for n in budgets)
        + f" | test/acc of the selected trial after {budget} |",
        "|---" * (len(budgets) + 3) + "|",
    ]
    for sampler, by_seed in studies.items():
        curves = [best_so_far(t) for t in by_seed.values()]
        cells = []
        for n in budgets:
            vals = [c[n - 1].val for c in curves if len(c) >= n]
            cells.append(_pct(vals) if len(vals) == len(curves) else "n/a")
        tests = [c[min(budget, len(c)) - 1].test for c in curves]
        lines.append(f"| {sampler} | {len(curves)} | " + " | ".join(cells) + f" | {_pct(tests)} |")
    lines += ["", "Accuracies in %, mean ± std over search seeds. Per search seed (pair), after the last budget:", ""]
    lines += [
        "| seed | random: val / test | random: lr, wd, dropout | grid: val / test | grid: lr, wd, dropout | "
        "random - grid (val) | grid's lr values | failed trials (random / grid) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    seeds = sorted(set().union(*(by.keys() for by in studies.values())))
    for seed in seeds:
        r, g = studies.get("random", {}).get(seed), studies.get("grid", {}).get(seed)
        rs, gs = (selected(t, budget) if t else None for t in (r, g))
        diff = f"{100 * (rs.val - gs.val):+.2f}" if rs and gs else "n/a"
        grid_lr = ", ".join(f"{v:.3g}" for v in sorted({t.params["optimizer.lr"] for t in g})) if g else "n/a"
        failed = " / ".join(str(sum(t.val == -math.inf for t in x)) if x else "n/a" for x in (r, g))
        lines.append(
            f"| {seed} | {_cell(rs)} | {_params(rs) if rs else 'n/a'} | {_cell(gs)} | "
            f"{_params(gs) if gs else 'n/a'} | {diff} | {grid_lr} | {failed} |"
        )
    if "grid" in studies:
        effects = pooled_effects(studies["grid"])
        lines += [
            "",
            f"Main effects over the grids (mean val/acc_best % per grid level, low / mid / high value of "
            f"each study's shifted grid, averaged over its {len(studies['grid'])} studies; a diverged trial counts at "
            f"chance, {100 * CHANCE:.0f}%):",
            "",
        ]
        for key, values in effects.items():
            cells = " / ".join(f"{100 * v:.2f}" for v in values)
            lines.append(f"- `{key}`: {cells} (spread {100 * _spread(values):.2f} points)")
    if "random" in studies:
        pooled = [t for trials in studies["random"].values() for t in trials]
        lines += ["", f"Random trials pooled ({len(pooled)}), val/acc_best % by learning-rate decade:", ""]
        lo = math.floor(math.log10(min(t.params["optimizer.lr"] for t in pooled)))
        hi = math.ceil(math.log10(max(t.params["optimizer.lr"] for t in pooled)))
        for d in range(lo, hi):
            bucket = [t for t in pooled if 10**d <= t.params["optimizer.lr"] < 10 ** (d + 1)]
            done = [t.val for t in bucket if t.val > -math.inf]
            if bucket:
                failed = len(bucket) - len(done)
                stats = f"mean {100 * statistics.fmean(done):.2f}, max {100 * max(done):.2f}" if done else "no value"
                lines.append(
                    f"- lr in [1e{d}, 1e{d + 1}): {stats} ({len(bucket)} trials"
                    + (f", {failed} failed)" if failed else ")")
                )
    lines += ["", *_compute(studies, searches)]
    return "\n".join(lines)


def _compute(studies: Studies, searches: Path) -> list[str]:
    # The trials' own wall time and each study's span (first start to last heartbeat).
    all_trials = [t for by_seed in studies.values() for trials in by_seed.values() for t in trials]
    trial_wall = [t.wall_s for t in all_trials]
    spans = [
        (trials[-1].ended - trials[0].started).total_seconds()
        for by_seed in studies.values()
        for trials in by_seed.values()
        if trials[0].started and trials[-1].ended
    ]
    span = (
        f"studies took {min(spans):.0f}-{max(spans):.0f} s each ({sum(spans) / 60:.1f} min summed, " if spans else "("
    )
    return [
        f"Compute: {len(all_trials)} trials in {sum(len(b) for b in studies.values())} studies; train.py's own wall "
        f"time per trial {statistics.fmean(trial_wall):.1f} s on average ({sum(trial_wall) / 60:.1f} min in all); "
        f"{span}the sweeper's per-job overhead included).",
        f"Hardware: {platform.machine()} CPU, {_cpu_model()}, {_nproc()} cores shared with other jobs; "
        f"torch {_torch_version()}, 1 torch thread per trial. Studies read from `{_rel(searches)}`.",
    ]


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
    # One generated block per study prefix; everything outside the blocks is hand-written and kept.
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
    parser.add_argument("--prefix", default="rvg-offset", help="studies <prefix>-<sampler>-s<seed> (run.sh's names)")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    parser.add_argument("--budgets", type=int, nargs="+", default=[5, 10, 20, 27], help="the last one is the primary's")
    args = parser.parse_args(argv)
    studies = load_all(args.searches, args.prefix)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    figure = args.out_dir / "best_vs_trials.png"
    draw(studies, figure, "MLP on digits, plain SGD, 5 epochs per trial")
    generated = report(studies, args.budgets, args.searches)
    write_results(args.out_dir / "results.md", generated, args.prefix)
    print(generated)
    print(f"wrote {figure} and {args.out_dir / 'results.md'}")


if __name__ == "__main__":
    main()
