"""Issue 18 items 2 and 4 (the table's side): gates before a verdict (converged, overfits, the paper's precondition),
the plan file, and a gap from eval-mode training accuracy. Fake run folders (results.json, history.csv), no
training."""

from __future__ import annotations

import csv
import io
import math
import statistics

import pytest

from ablate.config.rules.table import parse_precondition
from ablate.errors import ConfigError
from ablate.report.gates import plateau_change
from tests.conftest import write_run
from tests.test_table import error_of, table  # the table command as a user runs it, and its one-line errors

BASE = [0.80, 0.84, 0.78, 0.86, 0.82]  # test/acc of the baseline per seed
GAIN = [0.0030, 0.0035, 0.0025, 0.0032, 0.0028]  # within-seed gain of the row: a paired "yes"
FLAT = [0.3 + 0.7 * math.exp(-e / 2) for e in range(20)]  # plateaued: last 2 vs 2 before moves ~0.06%
FALLING = [1.0 - 0.04 * e for e in range(20)]  # still falling: epochs 16-17 vs 18-19, (0.34 - 0.26) / 0.34 = 23.5%


def gate_lines(out):
    return [line for line in out.splitlines() if line.startswith("- gate ")]


def verdict_line(out):
    return next(line for line in out.splitlines() if line.startswith("**Primary:"))


def paired_sweep(root, base_loss=FLAT, train_eval=0.95, val=0.90):
    """ensemble=none (baseline) vs ensemble=swa, 5 shared seeds; the baseline's history.csv has ``base_loss``."""
    for s, (b, g) in enumerate(zip(BASE, GAIN, strict=True)):
        fit = {"train/acc": 0.9, "train/acc_eval": train_eval, "val/acc": val}
        write_run(root, f"n{s}", ["ensemble=none", f"seed={s}"], seed=s, train_loss=base_loss, **fit, **{"test/acc": b})
        write_run(root, f"s{s}", ["ensemble=swa", f"seed={s}"], seed=s, train_loss=FLAT, **fit, **{"test/acc": b + g})
    return root


PRIMARY = ["--metrics", "test/acc", "--baseline", "ensemble=none", "--primary", "ensemble=swa"]
DECLARED = ["--expected-effect", "0.005", "--margin", "0.002"]


def test_plateau_compares_the_last_tenth_of_epochs_with_the_tenth_before():
    change, k = plateau_change(FALLING)  # 20 epochs: tenths of 2
    assert k == 2 and change == pytest.approx((0.34 - 0.26) / 0.34)
    assert plateau_change([1.0] * 100)[1] == 10  # 10% of 100 epochs
    assert plateau_change([1.0, 0.9, 0.8]) == "3 epochs with a train/loss, needs 4+"


def test_converged_gate_passes_on_a_plateau_and_fails_on_a_falling_loss(tmp_path, capsys):
    out = table(capsys, paired_sweep(tmp_path / "flat"), *PRIMARY, *DECLARED, "--converged")
    (line,) = gate_lines(out)
    flat = abs(statistics.fmean(FLAT[16:18]) - statistics.fmean(FLAT[18:20])) / statistics.fmean(FLAT[16:18])
    assert line.startswith("- gate converged (ensemble=none, 5 runs): train/loss change, last 2 epochs vs the 2")
    assert f"{flat * 100:.2f}%" in line and "(< 5.00% required)" in line and line.endswith("**pass**")
    assert "**Verdict: yes**" in verdict_line(out) and "gates: 1 of 1 pass" in out.splitlines()[0]

    out = table(capsys, paired_sweep(tmp_path / "falling", base_loss=FALLING), *PRIMARY, *DECLARED, "--converged")
    (line,) = gate_lines(out)
    falling = (0.34 - 0.26) / 0.34
    assert f"{falling * 100:.2f}%, " in line and line.endswith("**FAIL**")
    # A looser tolerance, declared up front, lets it pass.
    assert gate_lines(table(capsys, tmp_path / "falling", *PRIMARY, *DECLARED, "--converged", "0.3"))[0].endswith(
        "**pass**"
    )


def test_a_run_too_short_or_without_history_cannot_be_checked_and_fails(tmp_path, capsys):
    root = paired_sweep(tmp_path / "short", base_loss=[1.0, 0.5, 0.4])
    (root / "n0" / "history.csv").unlink()
    out = table(capsys, root, *PRIMARY, *DECLARED, "--converged")
    (line,) = gate_lines(out)
    assert "cannot be checked: n0: no history.csv; n1: 3 epochs with a train/loss, needs 4+" in line
    assert line.endswith("**FAIL**")
    assert "**Verdict: gate failed** (baseline ensemble=none not converged: cannot be checked: n0" in verdict_line(out)


def test_a_failed_gate_replaces_the_verdict_in_markdown_csv_and_latex(tmp_path, capsys):
    root = paired_sweep(tmp_path / "p", base_loss=FALLING)
    out = table(capsys, root, *PRIMARY, *DECLARED, "--converged")
    line = verdict_line(out)
    assert "**Verdict: gate failed** (baseline ensemble=none not converged: train/loss still moving 23.53%)" in line
    assert "yes" not in line and "minimum detectable" not in line
    assert "primary: gate failed (paired t)" in out
    rows = {
        r["setting"]: r
        for r in csv.DictReader(io.StringIO(table(capsys, root, *PRIMARY, *DECLARED, "--converged", "--format", "csv")))
    }
    assert rows["ensemble=swa"]["verdict"] == "gate failed" and rows["ensemble=none"]["verdict"] == ""
    latex = table(capsys, root, *PRIMARY, *DECLARED, "--converged", "--format", "latex")
    assert "% - gate converged (ensemble=none, 5 runs)" in latex and "Verdict: gate failed" in latex
    # Without gates the same runs say yes: the gate, not the data, changed the verdict.
    assert "**Verdict: yes**" in verdict_line(table(capsys, root, *PRIMARY, *DECLARED))


def test_overfits_gate_uses_eval_mode_train_accuracy_minus_validation(tmp_path, capsys):
    out = table(capsys, paired_sweep(tmp_path / "over"), *PRIMARY, *DECLARED, "--overfits", "0.02")
    (line,) = gate_lines(out)
    assert line == (
        "- gate overfits (ensemble=none, 5 runs): train/acc_eval - val/acc: mean 5.00 points (>= 2.00 required): "
        "**pass**"
    )
    # train/acc (training mode, 0.9) is what a masked net reports; the gate never reads it.
    out = table(capsys, paired_sweep(tmp_path / "under", train_eval=0.91), *PRIMARY, *DECLARED, "--overfits", "0.02")
    assert gate_lines(out)[0].endswith("mean 1.00 points (>= 2.00 required): **FAIL**")
    assert "(baseline ensemble=none does not overfit: train/acc_eval - val/acc = 1.00 points < 2.00)" in verdict_line(
        out
    )


def test_overfits_cannot_be_checked_on_runs_recorded_before_train_acc_eval(tmp_path, capsys):
    root = tmp_path / "old"
    for s in range(2):
        write_run(root, f"n{s}", ["reg=none", f"seed={s}"], **{"train/acc": 0.99, "val/acc": 0.9, "test/acc": 0.9})
    line = gate_lines(table(capsys, root, "--metrics", "test/acc", "--baseline", "reg=none", "--overfits", "0.02"))[0]
    assert "cannot be checked: no train/acc_eval or val/acc in n0, n1" in line and line.endswith("**FAIL**")


def _snapshots(root, spreads):
    """ensemble=snapshot runs whose 3 snapshots spread by ``spreads[s]`` on validation; the ensembles' own
    val/acc_snapshot_ens<m> lie far away (the glob must leave them out)."""
    for s, d in enumerate(spreads):
        snaps = {"val/acc_snapshot1": 0.88, "val/acc_snapshot2": 0.88 + d / 2, "val/acc_snapshot3": 0.88 + d}
        ens = {"val/acc_snapshot_ens3": 0.95, "test/acc": 0.9}
        write_run(root, f"s{s}", ["ensemble=snapshot", f"seed={s}"], seed=s, **snaps, **ens)
        write_run(root, f"n{s}", ["ensemble=none", f"seed={s}"], seed=s, **{"test/acc": 0.9, "val/acc": 0.88})
    return root


PRECONDITION = "ensemble=snapshot: spread(val/acc_snapshot[0-9]*) <= 0.005"


def test_precondition_checks_each_runs_spread_of_matching_metrics(tmp_path, capsys):
    out = table(capsys, _snapshots(tmp_path / "ok", [0.002, 0.004, 0.003]), "--precondition", PRECONDITION)
    (line,) = gate_lines(out)
    assert line == (
        "- gate precondition spread(val/acc_snapshot[0-9]*) <= 0.005 (ensemble=snapshot, 3 runs): spread of 3 metrics "
        "(val/acc_snapshot1..val/acc_snapshot3) per run: 0.20, 0.40, 0.30 points (<= 0.50 points required): **pass**"
    )
    out = table(capsys, _snapshots(tmp_path / "far", [0.002, 0.012, 0.003]), "--precondition", PRECONDITION)
    assert gate_lines(out)[0].endswith("0.20, 1.20, 0.30 points (<= 0.50 points required): **FAIL**")
    # mean / min / max over the same metrics; > and >= as well.
    out = table(capsys, tmp_path / "far", "--precondition", "ensemble=snapshot: min(val/acc_snapshot[0-9]*) >= 0.88")
    assert gate_lines(out)[0].endswith("88.00, 88.00, 88.00 points (>= 88.00 points required): **pass**")


def test_a_failed_precondition_replaces_the_verdict(tmp_path, capsys):
    root = _snapshots(tmp_path / "far", [0.002, 0.012, 0.003])
    args = ["--metrics", "test/acc", "--baseline", "ensemble=none", "--primary", "ensemble=snapshot", *DECLARED]
    line = verdict_line(table(capsys, root, *args, "--precondition", PRECONDITION))
    assert f"**Verdict: gate failed** (precondition '{PRECONDITION}' not met: spread = 1.20 points)" in line


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ensemble=snapshot: avg(val/acc_snapshot1) <= 0.005", "unknown function 'avg'"),
        ("ensemble=snapshot: spread(test/acc_snapshot[0-9]*) <= 0.005", "never test"),
        ("ensemble=snapshot: spread(*/acc) <= 0.005", "never test"),
        ("ensemble=snapshot spread(val/acc_snapshot1) <= 0.005", "takes 'SETTING: FUNCTION(METRICS) OP NUMBER'"),
        ("ensemble=snapshot: spread(val/acc_snapshot1) == 0.005", "takes 'SETTING: FUNCTION(METRICS) OP NUMBER'"),
        ("ensemble=snapshot: spread(val/acc_snapshot1) <= half", "'half' is not a finite number"),
        ("ensemble=snapshot: spread(val/acc_snapshot1) <= 0.5 + 1", "takes 'SETTING"),
        ("ensemble=snapshot: spread(val/acc_snapshot1) <= 5", "accuracies are fractions"),
        ("snapshot: spread(val/acc_snapshot1) <= 0.005", "--precondition takes a setting as typed"),
    ],
)
def test_precondition_parser_is_strict(spec, expected, tmp_path, capsys):
    with pytest.raises(ConfigError, match=None) as exc:
        parse_precondition(spec)
    assert expected in str(exc.value)
    assert expected in error_of(capsys, _snapshots(tmp_path / "r", [0.0]), "--precondition", spec)


def test_gate_option_errors_are_one_line(tmp_path, capsys):
    root = _snapshots(tmp_path / "r", [0.001, 0.002])
    assert "--converged checks the baseline's runs: it needs --baseline" in error_of(capsys, root, "--converged")
    assert "argument --overfits: must be a number in (0, 1), got '2'" in error_of(capsys, root, "--overfits", "2")
    err = error_of(capsys, root, "--precondition", "ensemble=snapshot: spread(val/acc_snap[0-9]*) <= 0.005")
    assert "no metric of ensemble=snapshot matches val/acc_snap[0-9]*; its metrics: val/acc_snapshot1" in err
    err = error_of(capsys, root, "--precondition", "ensemble=snapshot: spread(val/acc_snapshot*) <= 0.005")
    assert "matches metrics of 2 kinds (val/acc_snapshot*, val/acc_snapshot_ens*); narrow it to one" in err
    err = error_of(capsys, root, "--precondition", "reg=x: spread(val/acc_snapshot[0-9]*) <= 0.005")
    assert "no row with setting 'reg=x' for --precondition" in err


def _plan(path, text):
    path.write_text(text)
    return path


PLAN = """\
baseline: ensemble=none
baseline_metric: test/acc
primary: ensemble=swa
expected_effect: 0.005
margin: 0.002
over: [seed]
gates:
  converged: {tolerance: 0.05}
  overfits: {min_gap: 0.02}
"""


def test_a_plan_file_declares_the_comparison_and_its_gates_once(tmp_path, capsys):
    root = paired_sweep(tmp_path / "runs", base_loss=FALLING)
    plan = _plan(tmp_path / "plan.yaml", PLAN)
    out = table(capsys, root, "--metrics", "test/acc", "--plan", plan)
    assert [line.split(" (")[0] for line in gate_lines(out)] == ["- gate converged", "- gate overfits"]
    assert "**Verdict: gate failed** (baseline ensemble=none not converged" in verdict_line(out)
    assert "expected +0.50 points, margin ±0.20 points" in verdict_line(out)
    # The command line overrides the plan: a looser tolerance passes; the margin given here is the one used.
    out = table(capsys, root, "--metrics", "test/acc", "--plan", plan, "--converged", "0.3", "--margin", "0.001")
    assert "**Verdict: yes**" in verdict_line(out) and "margin ±0.10 points" in verdict_line(out)
    assert "gates: 2 of 2 pass" in out.splitlines()[0]
    # converged: true is the default tolerance; preconditions as a list
    plan2 = _plan(
        tmp_path / "plan2.yaml",
        PLAN.replace("{tolerance: 0.05}", "true").replace("  overfits: {min_gap: 0.02}\n", "")
        + "  preconditions: ['ensemble=swa: min(val/acc) >= 0.95']\n",
    )
    lines = gate_lines(table(capsys, root, "--metrics", "test/acc", "--plan", plan2))
    assert "(< 5.00% required)" in lines[0] and lines[1].startswith("- gate precondition min(val/acc) >= 0.95")
    assert lines[1].endswith("**FAIL**")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("baseline: ensemble=none\nexpected_efect: 0.005\n", "unknown key expected_efect; known keys: baseline,"),
        ("baseline: ensemble=none\ngates: {convergd: true}\n", "unknown key convergd; known keys: converged, overfits"),
        ("gates: {overfits: 0.02}\n", "gates.overfits must be {min_gap: <number>}"),
        ("margin: -1\n", "margin must be a positive number, got '-1'"),
        ("- baseline\n", "must be a mapping of option: value"),
        ("baseline: [a, b]\n", "baseline must be a text value"),
    ],
)
def test_a_misspelled_or_mistyped_plan_is_refused(tmp_path, capsys, text, expected):
    root = paired_sweep(tmp_path / "runs")
    assert expected in error_of(capsys, root, "--plan", _plan(tmp_path / "plan.yaml", text))
    assert "--plan" in error_of(capsys, root, "--plan", tmp_path / "missing.yaml")


def test_gap_is_eval_mode_train_accuracy_with_a_note_for_older_runs(tmp_path, capsys):
    root = tmp_path / "gap"
    for s in range(2):
        new = {"train/acc": 0.85, "train/acc_eval": 0.97, "test/acc": 0.90, "val/acc": 0.91}
        write_run(root, f"d{s}", ["reg=dropout", f"seed={s}"], **new)
        write_run(root, f"o{s}", ["reg=none", f"seed={s}"], **{"train/acc": 0.99, "test/acc": 0.90})
    out = table(capsys, root)
    assert "| setting | n | train/acc (%) | train/acc_eval (%) | test/acc (%) | gap (%) |" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| reg=")}
    assert "| 7.00 ± 0.00 |" in rows["reg=dropout"]  # 0.97 - 0.90, not 0.85 - 0.90 (masks active)
    assert "| 9.00 ± 0.00 |" in rows["reg=none"]  # no train/acc_eval: train/acc - test/acc
    assert "gap: training-mode accuracy (train/acc) for 2 runs recorded before train/acc_eval." in out
    assert "training-mode" not in table(capsys, root / "d0")  # only new runs: no note
    from ablate.config import metric_registry
    from ablate.report import runs

    assert set(metric_registry.DERIVED) == set(runs.DERIVED)  # the registry knows each derived gap's direction
    out = table(capsys, root, "--metrics", "val_gap")
    assert "| reg=dropout | 2 | 6.00 ± 0.00 |" in out and "| reg=none | 2 | - |" in out  # val_gap: no fallback


def test_a_loss_near_zero_that_moves_under_a_thousandth_of_a_nat_has_plateaued():
    """A net that fits its training set: 0.0020 -> 0.0018 nats is a 10% relative move but 0.0002 nats."""
    change, _ = plateau_change([0.5] * 16 + [0.0020, 0.0020, 0.0018, 0.0018])
    assert change == pytest.approx(0.0002 / 0.02)  # relative to the 0.02-nat floor: 1%, under the 5% tolerance
    change, _ = plateau_change([0.5] * 16 + [0.30, 0.30, 0.27, 0.27])  # a real loss: relative to itself, 10%
    assert change == pytest.approx(0.1)
