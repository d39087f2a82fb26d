"""Runs -> tables and figures: group results.json files by setting, report mean ± std over seeds (or folds).

    python -m ablate.table logs/multiruns/<dir> [<dir> ...] [--metrics train/acc test/acc gap] [--format md|csv|latex]
        [--over seed,fold] [--baseline "reg=none"] [--baseline-metric test/acc] [--alpha 0.05]
        [--row-metric "ensemble=swa:test/acc_swa" ...] [--secondary-metric test/nll ...]
        [--primary SETTING --expected-effect X --margin M]
        [--converged [TOL]] [--overfits MIN] [--precondition SPEC ...] [--plan experiments/<name>/plan.yaml]
        [--reference experiments/<name>/reference.yaml] [--plot bars.png] [--curves curves.png] [--out table.md]

Rows: one per setting, named by its overrides as typed (``optimizer.lr=1e9``; a long float with 4 significant digits,
``optimizer.lr=0.003162``), minus the keys in ``--over`` (pooled; ``fold`` matches ``data.fold``), minus overrides
every run shares and keys that are not settings (``ckpt_path``, ``hydra.*``, ``paths.*``, logging switches). A key
that some runs set and others left at its default is named in both (``ensemble=none`` beside ``ensemble=swa``), so
several folders (one per sweep) make one table. With --baseline, the baseline row comes first. Only completed runs are
averaged; failed, diverged, interrupted (killed, or a stale heartbeat) and still-running runs are counted per row.
``gap`` is train/acc_eval - test/acc (the final weights in eval mode on the training split); for runs recorded
before train/acc_eval it falls back to train/acc (training mode: masks active, weights moving during the epoch), and
a line under the table counts them. ``val_gap`` is train/acc_eval - val/acc (no fallback). Default metrics:
train/acc, train/acc_eval, test/acc, gap, and test/nll, test/ece where recorded (calibration can move against
accuracy, e.g. under label smoothing).

Units: accuracies (names with ``acc``, and gap) in %, other metrics as recorded; CSV holds raw values (fractions),
one column per statistic (<metric>_mean, _std, _n). n = 1 has no ± and no verdict.

--baseline: each row gets better / worse / n.s. from a two-sided t-test (paired by seed when the row and its baseline
have exactly the same seeds, else Welch's, unequal variances) of
--baseline-metric (default: the first --metrics given, else test/acc) against the baseline row, the p-values
Holm-corrected over all rows tested: better / worse only when the Holm-adjusted p < --alpha, else n.s.
--primary SETTING --expected-effect X --margin M: the one comparison the experiment is about (the paper's claim),
judged by the verdict rule of experiments/README.md: paired t-test by seed when both arms have the same seeds, else
Welch; yes (p < alpha in the expected direction), no (p < alpha the other way, or equivalent within ±M by two one-sided
tests), else inconclusive with the minimum detectable effect at this n and std (power 0.8). X is the effect the
paper leads us to expect, signed as an improvement (> 0: SETTING better than the baseline; lower is better for
losses), X and M in the metric's raw units (accuracies as fractions: 0.005 = 0.5 points), M < |X|. The primary row
is left out of the Holm family of the other (secondary) rows.
In a factorial sweep a baseline may fix only some keys: ``--baseline reg=none`` beside ``model.activation=relu,tanh``
compares each row with the ``reg=none`` row of the same activation (per-group baselines).
--row-metric SETTING:METRIC (repeatable) tests that row's METRIC instead, against the baseline's --baseline-metric:
an ensemble or weight average is judged by its own accuracy, e.g. ``--baseline ensemble=none --row-metric
"ensemble=swa:test/acc_swa"`` (the SWA average vs plain SGD); the verdict names the metric it tested. The baseline
may come from another folder: ``python -m ablate.table <plain sweep> <swa sweep> --baseline ensemble=none
--row-metric "ensemble=swa:test/acc_swa"``.
--secondary-metric METRIC (repeatable, with --baseline): every tested row against its baseline on METRIC too
(calibration beside accuracy: test/nll, test/ece), each row on its own variant: a row judged by
``--row-metric ensemble=swa:test/acc_swa`` against the baseline's test/acc is judged on test/nll by test/nll_swa. Paired
by seed where the rows share seeds, else Welch; Holm-corrected in one family with the rows' own tests (so their
"p (Holm)" column grows with it), better / worse only when the adjusted p < --alpha. One line per test under the table.

Gates (experiments/README.md "Verdict rule", step 0; ablate.report.gates): can these runs test the claim at all?
Checked on training and validation data only, never test; one line each under the table (rows checked, measured
values, pass / FAIL). A failed gate replaces the primary verdict: "Verdict: gate failed (why)", CSV's verdict
column ``gate failed``. --converged [TOL]: every baseline run's train/loss (history.csv) moved less than TOL (default
0.05 = 5%) between the last tenth of its epochs (2 at least) and the tenth before; fewer than 4 epochs or no
history.csv cannot be checked, which fails. --converged-window final_lr compares the two halves of the final
constant-lr phase instead (history.csv's lr; for schedules that decay until near the end, as the SWA paper's SGD).
--overfits MIN (claims about regularization): the baseline's mean
train/acc_eval - val/acc >= MIN (0.02 = 2 points). --precondition 'SETTING: FUNCTION(GLOB) OP X' (repeatable): per
completed run of the rows with SETTING, FUNCTION (spread = max - min, mean, min, max) over its results.json metrics
matching the val/ or train/ glob, compared by OP (<=, <, >=, >) with X in raw units, e.g. the snapshot paper's
"snapshots within 0.5 points on validation": 'ensemble=snapshot: spread(val/acc_snapshot[0-9]*) <= 0.005'
(``val/acc_snapshot*`` would also match the ensembles' val/acc_snapshot_ens<m>). The baseline gates check the
--primary row's baseline, else every baseline row.

--plan experiments/<name>/plan.yaml: the experiment's declaration, written once; keys mirror the options
(underscores for dashes), options given on the command line override it, an unknown key is an error:
    baseline: ensemble=none
    primary: ensemble=swa
    row_metric: {ensemble=swa: test/acc_swa}
    expected_effect: 0.003
    margin: 0.001
    gates: {converged: {tolerance: 0.05, window: final_lr}, overfits: {min_gap: 0.02}, preconditions: ["SETTING: ..."]}
Also: metrics, baseline_metric, over, alpha, reference.

--reference: a YAML file of a paper's numbers, joined by setting, with a difference column (ours - paper):
    source: "Huang et al. 2017, Table 1, p. 6"
    metric: test/acc                         # the metric of bare numbers below (default test/acc)
    rows:
      "ensemble=snapshot": {test/acc: 0.9448}
      "ensemble=none": 0.9312
Accuracies as fractions, like results.json. ``rows`` may also be a list of {setting: ..., <metric>: ...}.

--plot: bar chart of --plot-metric (default: the baseline metric) with ±std error bars, the baseline bar grey and
hatched. Its axis starts at 0; an accuracy axis is zoomed only when some row differs significantly from its baseline,
and then the figure says "axis starts at X" beside a broken-axis mark. --curves: --curve-metric (default val/acc) per
epoch from each run's history.csv, mean and ±std band per setting.

Every option is checked before any run is read: a bad value is one line on stderr naming the option, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ablate.config.metric_registry import is_known
from ablate.config.rules.table import check_table_args, parse_precondition
from ablate.errors import ConfigError
from ablate.report.table_args import DEFAULT_METRICS, DEFAULTS, parser


def check_args(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, Any] | None, Any]:
    """--plan merged in (the command line wins), then every option checked by the rule book
    (ablate.config.rules.table) before any run is read; returns the parsed --row-metric, the loaded --reference and
    the declared gates (ablate.report.gates.GateSpec)."""
    from ablate.report import load_reference
    from ablate.report.gates import GateSpec
    from ablate.report.plan import apply_plan

    apply_plan(args, DEFAULTS)
    row_metrics = check_table_args(args)
    preconditions = [parse_precondition(t) for t in args.precondition]
    gates = GateSpec(args.converged, args.overfits, preconditions, args.converged_window or "tenths")
    return row_metrics, load_reference(args.reference) if args.reference else None, gates


def run(args: argparse.Namespace) -> str:
    from ablate.report import available_metrics, build, load_all, plot_bars, plot_curves, render
    from ablate.report.stats import find_row

    row_metrics, reference, gate_spec = check_args(args)
    runs = load_all(args.root, args.stale_after)
    known = available_metrics(runs)
    metrics = args.metrics or [m for m in DEFAULT_METRICS if m in known] or [m for m in known if is_known(m)][:3]
    key_metric = args.baseline_metric or (args.metrics[0] if args.metrics else "test/acc")
    if args.baseline:
        metrics = [*metrics, *(m for m in dict.fromkeys([key_metric, *row_metrics.values()]) if m not in metrics)]
    over = tuple(k.strip() for k in args.over.split(",") if k.strip())
    rows = build(runs, metrics, over, args.baseline, key_metric, args.alpha, reference, row_metrics)
    verdict = None
    if args.primary:
        from ablate.report.verdicts import primary

        verdict = primary(rows, args.primary, args.expected_effect, args.margin, args.alpha, over)
    primary_row = find_row(rows, args.primary) if args.primary else None
    notes, gates = _notes(rows, metrics, gate_spec, primary_row)
    if args.baseline and args.secondary_metric:
        notes += _secondary(rows, args, key_metric, over, primary_row)
    failures = [g.failure for g in gates if not g.passed]
    if verdict is not None and failures:
        verdict.fail_gates(failures)
    if reference is not None:
        unmatched = [s for s in reference["rows"] if find_row(rows, s) is None]
        if unmatched:
            print(f"warning: reference rows without runs: {'; '.join(unmatched)}", file=sys.stderr)
    text = render(rows, metrics, args.format, key_metric if args.baseline else None, notes)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.plot:
        plot_metric = args.plot_metric or key_metric
        plot_rows = rows if plot_metric in metrics else build(runs, [*metrics, plot_metric], over)  # checks the name
        plot_bars(plot_rows, plot_metric, args.plot)
    if args.curves:
        plot_curves(rows, args.curve_metric, args.curves)
    if args.format != "md":
        return text
    prose = f"{len(runs)} runs, {len(rows)} settings; mean ± std over {', '.join(over) or 'nothing'} (n completed runs)"
    prose += "; accuracies in %, other metrics as recorded"
    if args.baseline:
        prose += f"; vs baseline: t-test on {key_metric} (paired by seed where the rows share seeds, else Welch's)"
        prose += f", Holm-corrected, alpha = {args.alpha:g}"
        if args.primary:
            prose += f" (primary: {args.primary}, by the verdict rule of experiments/README.md)"
        if find_row(rows, args.baseline) is None:
            prose += f" (per group: the row with {args.baseline} and the same other settings)"
        if row_metrics:
            prose += " (" + ", ".join(f"{m} for {s}" for s, m in row_metrics.items()) + ")"
    if reference is not None:
        prose += f"; reference: {reference['source']} (Δ = ours - reference)"
    if gates:
        prose += f"; gates: {len(gates) - len(failures)} of {len(gates)} pass"
    return f"{prose}\n\n{text}"


def _notes(rows: list[Any], metrics: list[str], gate_spec: Any, primary_row: Any) -> tuple[list[str], list[Any]]:
    """The lines under the table: where the gap's train side came from (when some runs predate train/acc_eval) and
    one line per gate; returns them and the gates' results."""
    from ablate.report.gates import check_gates
    from ablate.report.stats import gap_from_train_mode

    notes = []
    old = gap_from_train_mode(rows) if "gap" in metrics else 0
    if old:
        notes.append(f"gap: training-mode accuracy (train/acc) for {old} runs recorded before train/acc_eval.")
    gates = check_gates(rows, gate_spec, primary_row) if gate_spec else []
    if gates:
        notes += [*([""] if notes else []), "Gates (training and validation data only):", ""]
        notes += [g.line() for g in gates]
    return notes, gates


def _secondary(
    rows: list[Any], args: argparse.Namespace, key_metric: str, over: tuple[str, ...], primary_row: Any
) -> list[str]:
    """--secondary-metric: the tests, Holm-corrected in one family with the rows' own tests (the primary row's
    key-metric test stays out of it, as in the verdict rule); their lines under the table."""
    from ablate.report.secondary import notes, secondary_tests
    from ablate.report.verdicts import apply_holm

    tests, missing = secondary_tests(rows, args.secondary_metric, key_metric, over)
    family = apply_holm(rows, args.alpha, primary_row, tests)
    return notes(tests, missing, family)


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    try:
        text = run(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(ConfigError.exit_code)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
