"""ablate.report.table: results.json files -> rows per setting (typed names, pooled seeds/folds, runs counted by
status), Welch verdicts, a paper's reference numbers, Markdown / CSV / LaTeX, bar chart and curves. Fake runs, no
training."""

from __future__ import annotations

import csv
import io
import math
import re
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

from ablate.report import build, load_runs
from ablate.report.render import latex_escape
from ablate.report.table import main
from tests.conftest import write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def table(capsys, *args):
    main([str(a) for a in args])
    return capsys.readouterr().out


def md_rows(out):
    """setting -> cells of a Markdown table (header and rule lines left out)."""
    lines = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in lines if cells[0].strip() != "setting"}


def error_of(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def sweep(tmp_path):
    """reg=none vs reg=dropout (3 seeds each, not the same seeds: Welch), reg=l2 with one completed run, a failed, a
    diverged run and a killed one; a test loss beside the accuracies."""
    root = tmp_path / "sweep"
    for s, (a, b) in enumerate([(0.80, 0.90), (0.82, 0.92), (0.81, 0.91)]):
        write_run(root, f"n{s}", ["reg=none", f"seed={s}"], **{"train/acc": 0.95, "test/acc": a, "test/loss": 0.61})
        dropout = {"train/acc": 0.93, "test/acc": b, "test/loss": 0.3}
        write_run(root, f"d{s}", ["reg=dropout", f"seed={s + 10}"], **dropout)
    write_run(root, "l0", ["reg=l2", "seed=0"], **{"train/acc": 0.9, "test/acc": 0.85, "test/loss": 0.5})
    write_run(root, "l1", ["reg=l2", "seed=1"], status="diverged")
    write_run(root, "l2", ["reg=l2", "seed=2"], status="failed")
    write_run(root, "l3", ["reg=l2", "seed=3"], status="interrupted")
    return root


def test_rows_pool_seeds_with_units_only_accuracies_in_percent(sweep, capsys, tmp_path):
    out = table(capsys, sweep, "--metrics", "test/acc", "test/loss", "gap", "--out", tmp_path / "t.md")
    head = out.splitlines()[0]
    assert "accuracies in %" in head and "mean ± std over seed" in head
    assert "| setting | n | test/acc (%) | test/loss | gap (%) |" in out
    rows = md_rows(out)
    assert rows["reg=none"][1:5] == ["3", "81.00 ± 1.00", "0.6100 ± 0.0000", "14.00 ± 1.00"]  # loss not x100
    assert rows["reg=dropout"][2] == "91.00 ± 1.00"
    # n = 1: the value, no "± 0.00"; the runs that did not complete are counted by status, never averaged in.
    assert rows["reg=l2"][1:3] == ["1", "85.00"] and rows["reg=l2"][5] == "1 failed, 1 diverged, 1 interrupted"
    assert (tmp_path / "t.md").read_text().startswith("| setting |")


def test_welch_verdicts_match_a_hand_computed_statistic(sweep, capsys):
    out = table(capsys, sweep, "--baseline", "reg=none", "--metrics", "test/acc", "test/loss")
    assert (
        "t-test on test/acc (paired by seed where the rows share seeds, else Welch's), Holm-corrected, alpha = 0.05"
        in (out.splitlines()[0])
    )
    rows = md_rows(out)
    # By hand: means 0.91 vs 0.81, both sample sd 0.01, n = 3: t = 0.1 / sqrt(2 * 0.01**2 / 3) = 12.247,
    # Welch-Satterthwaite df = 4, two-sided p = 2 * t_4.sf(12.247).
    t = 0.1 / math.sqrt(2 * 0.01**2 / 3)
    from scipy.stats import t as student_t

    p = 2 * student_t.sf(t, 4)
    assert rows["reg=dropout"][-3:-1] == ["better", f"{p:.3g}"]
    assert rows["reg=none"][-3:-1] == ["baseline", "-"]
    assert rows["reg=l2"][-3:-1] == ["-", "-"]  # n = 1: no test, no verdict
    out = table(capsys, sweep, "--baseline", "reg=none", "--metrics", "test/acc", "--format", "csv")
    csv_rows = {r["setting"]: r for r in csv.DictReader(io.StringIO(out))}
    assert float(csv_rows["reg=dropout"]["t"]) == pytest.approx(t, rel=1e-9)
    assert float(csv_rows["reg=dropout"]["p_value"]) == pytest.approx(p, rel=1e-9)
    # A stricter level turns the same difference into "n.s."; a loss is better when lower.
    assert md_rows(table(capsys, sweep, "--baseline", "reg=none", "--alpha", "1e-6"))["reg=dropout"][-3] == "n.s."
    by_loss = ["--baseline", "reg=none", "--metrics", "test/loss", "--baseline-metric", "test/loss"]
    loss_out = table(capsys, sweep, *by_loss)
    assert "vs baseline (test/loss)" in loss_out
    assert md_rows(loss_out)["reg=dropout"][-3:-1] == ["-", "-"]  # both sides constant, means differ: undefined
    write_run(sweep, "d9", ["reg=dropout", "seed=9"], **{"train/acc": 0.9, "test/acc": 0.9, "test/loss": 0.32})
    assert md_rows(table(capsys, sweep, *by_loss))["reg=dropout"][-3] == "better"  # lower loss


def test_row_metric_tests_an_ensemble_metric_against_the_baselines_own(tmp_path, capsys):
    """SWA's claim is its average (test/acc_swa) vs plain SGD's test/acc: one command, the tested metric named."""
    root = tmp_path / "swa"
    for s, (sgd, raw, avg) in enumerate([(0.80, 0.70, 0.90), (0.82, 0.72, 0.92), (0.81, 0.71, 0.91)]):
        write_run(root, f"n{s}", ["ensemble=none", f"seed={s}"], **{"train/acc": 0.9, "test/acc": sgd})
        write_run(root, f"s{s}", ["ensemble=swa", f"seed={s + 10}"], **{"test/acc": raw, "test/acc_swa": avg})
    args = [root, "--metrics", "test/acc", "--baseline", "ensemble=none"]
    plain = md_rows(table(capsys, *args))
    assert plain["ensemble=swa"][-3] == "worse"  # its raw weights (0.71) vs SGD (0.81)
    out = table(capsys, *args, "--row-metric", "ensemble=swa:test/acc_swa")
    assert "test/acc_swa for ensemble=swa" in out.splitlines()[0]
    assert "test/acc_swa (%)" in out  # the row's metric is added as a column
    rows = md_rows(out)
    assert rows["ensemble=swa"][-3] == "better (test/acc_swa)" and rows["ensemble=none"][-3] == "baseline"
    t = 0.1 / math.sqrt(2 * 0.01**2 / 3)  # means 0.91 vs 0.81, sd 0.01 each, n = 3 (as in the test above)
    csv_out = table(capsys, *args, "--row-metric", "ensemble=swa:test/acc_swa", "--format", "csv")
    row = {r["setting"]: r for r in csv.DictReader(io.StringIO(csv_out))}["ensemble=swa"]
    assert row["compared_metric"] == "test/acc_swa" and float(row["t"]) == pytest.approx(t, rel=1e-9)
    assert "SETTING:METRIC" in error_of(capsys, *args, "--row-metric", "ensemble=swa")
    assert "needs --baseline" in error_of(capsys, root, "--row-metric", "ensemble=swa:test/acc_swa")
    assert "for --row-metric" in error_of(capsys, *args, "--row-metric", "ensemble=ema:test/acc_swa")
    err = error_of(capsys, *args, "--row-metric", "ensemble=swa:test/acc_sw")  # no metric ablate writes
    assert "--row-metric: unknown metric 'test/acc_sw'" in err
    err = error_of(capsys, *args, "--row-metric", "ensemble=swa:test/acc_ema")  # one ablate writes, these runs did not
    assert "unknown metric test/acc_ema" in err and "available: test/acc, test/acc_swa, train/acc" in err


def test_a_partial_baseline_compares_within_each_group_of_a_factorial_sweep(tmp_path, capsys):
    """--baseline reg=none beside two activations: each row is tested against the reg=none row of its activation."""
    root = tmp_path / "grid"
    accs = {("relu", "none"): 0.80, ("relu", "dropout"): 0.90, ("tanh", "none"): 0.95, ("tanh", "dropout"): 0.90}
    for (act, reg), acc in accs.items():
        for s, d in enumerate((-0.01, 0.01, 0.0)):
            write_run(
                root,
                f"{act}-{reg}-{s}",
                [f"model.activation={act}", f"reg={reg}", f"seed={s if reg == 'none' else s + 10}"],
                **{"test/acc": acc + d},
            )
    write_run(root, "gelu", ["model.activation=gelu", "reg=dropout", "seed=0"], **{"test/acc": 0.9})  # no baseline
    out = table(capsys, root, "--metrics", "test/acc", "--baseline", "reg=none")
    assert "per group: the row with reg=none and the same other settings" in out.splitlines()[0]
    rows = md_rows(out)
    assert rows["model.activation=relu reg=dropout"][-3] == "better"  # 0.90 vs relu's 0.80
    assert rows["model.activation=tanh reg=dropout"][-3] == "worse"  # 0.90 vs tanh's 0.95
    assert rows["model.activation=relu reg=none"][-3] == rows["model.activation=tanh reg=none"][-3] == "baseline"
    assert rows["model.activation=gelu reg=dropout"][-3:-1] == ["-", "-"]
    t = 0.1 / math.sqrt(2 * 0.01**2 / 3)  # both sides sd 0.01, n = 3
    csv_out = table(capsys, root, "--metrics", "test/acc", "--baseline", "reg=none", "--format", "csv")
    relu = {r["setting"]: r for r in csv.DictReader(io.StringIO(csv_out))}["model.activation=relu reg=dropout"]
    assert float(relu["t"]) == pytest.approx(t, rel=1e-9)
    assert "no row with setting 'reg=l1'" in error_of(capsys, root, "--baseline", "reg=l1")


def test_settings_are_named_as_typed_and_found_by_value(tmp_path, capsys):
    # Hydra's sweeper hands each job `optimizer.lr=1000000000.0`; multirun.yaml keeps what the user typed.
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - optimizer.lr=1e9,1e-3\n    - seed=0,1\n"
    )
    for i, (lr, seed) in enumerate([("1000000000.0", 0), ("1000000000.0", 1), ("0.001", 0), ("0.001", 1)]):
        write_run(root, str(i), [f"optimizer.lr={lr}", f"seed={seed}"], **{"test/acc": 0.1 + 0.7 * (lr == "0.001")})
    rows = md_rows(table(capsys, root, "--metrics", "test/acc", "--baseline", "optimizer.lr=1e-3"))
    assert set(rows) == {"optimizer.lr=1e9", "optimizer.lr=1e-3"}
    assert rows["optimizer.lr=1e-3"][-3] == "baseline"
    # Without multirun.yaml (a single run, or a copied folder) the baseline is still found by its value.
    (root / "multirun.yaml").unlink()
    rows = md_rows(table(capsys, root, "--metrics", "test/acc", "--baseline", "optimizer.lr=1e9"))
    assert rows["optimizer.lr=1000000000.0"][-3] == "baseline"


def test_resumed_and_killed_runs_are_counted_once(tmp_path, capsys):
    root = tmp_path / "runs"
    now = time.time()
    write_run(root, "a0", ["reg=none", "seed=0"], **{"test/acc": 0.8})
    # Interrupted, then resumed in its own folder: the final results.json carries the ckpt_path override.
    write_run(root, "a1", ["reg=none", "seed=1", f"ckpt_path={root}/a1/checkpoints/last.ckpt"], **{"test/acc": 0.82})
    # Interrupted, resumed into a new folder: the new run replaces the old one.
    write_run(root, "a2", ["reg=none", "seed=2"], status="interrupted")
    write_run(root, "a2r", ["reg=none", "seed=2", f"ckpt_path={root}/a2/checkpoints/last.ckpt"], **{"test/acc": 0.84})
    # kill -9 leaves "running": a stale heartbeat means interrupted, a fresh one running, none: unknown (running).
    stale = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now - 3600))
    write_run(root, "b0", ["reg=none", "seed=3"], status="running", _extra={"heartbeat_at": stale})
    write_run(root, "b1", ["reg=none", "seed=4"], status="running", _extra={"heartbeat_at": now - 5})
    write_run(root, "b2", ["reg=none", "seed=5"], status="running")
    write_run(root, "b3", ["reg=none", "seed=6"], status="failed", _extra={"error": "interrupted"})
    write_run(
        root, "c0", ["reg=l2", "seed=0", "trainer.enable_progress_bar=false", "paths.log_dir=x"], **{"test/acc": 0.7}
    )
    out = table(capsys, root, "--metrics", "test/acc", "--format", "csv")
    rows = {r["setting"]: r for r in csv.DictReader(io.StringIO(out))}
    assert set(rows) == {"reg=none", "reg=l2"}  # no ckpt_path, progress-bar or paths "settings"
    none = rows["reg=none"]
    assert (none["n"], none["n_interrupted"], none["n_running"], none["n_failed"]) == ("3", "2", "2", "0")
    assert float(none["test/acc_mean"]) == pytest.approx(0.82)


def test_over_pools_folds_into_one_row_per_setting(tmp_path, capsys):
    root = tmp_path / "cv"
    for fold in range(3):
        for seed in range(2):
            for model, acc in (("mlp", 0.8), ("convnet", 0.9)):
                over = [f"model={model}", "data.num_folds=3", f"data.fold={fold}", f"seed={seed}"]
                write_run(root, f"{model}{fold}{seed}", over, **{"val/acc": acc + 0.01 * fold})
    rows = md_rows(table(capsys, root, "--metrics", "val/acc", "--over", "seed,fold"))
    assert set(rows) == {"model=mlp", "model=convnet"}
    assert rows["model=convnet"][1:3] == ["6", "91.00 ± 0.89"]
    assert "mean ± std over seed, fold" in table(capsys, root, "--metrics", "val/acc", "--over", "seed,fold")
    assert len(md_rows(table(capsys, root, "--metrics", "val/acc"))) == 6  # default: only seeds pooled


def test_unknown_names_are_one_line_errors_listing_what_exists(sweep, capsys, tmp_path):
    # A name no run can have (metric_registry): refused before any run is read, with the names ablate writes.
    for option in ("--metrics", "--baseline-metric", "--plot-metric", "--curve-metric"):
        err = error_of(capsys, tmp_path, option, "test/accuracy")
        assert f"{option}: unknown metric 'test/accuracy'" in err and "val/acc, val/loss" in err, err
    # A name ablate writes that these runs did not record: the metrics they have.
    err = error_of(capsys, sweep, "--metrics", "test/nll")
    assert "unknown metric test/nll" in err and "test/acc, test/loss, train/acc, gap" in err
    err = error_of(capsys, sweep, "--over", "seed,fold")
    assert "unknown grouping key fold" in err and "reg, seed" in err
    assert "settings: reg=dropout; reg=l2; reg=none" in error_of(capsys, sweep, "--baseline", "reg=l3")
    assert "no such folder" in error_of(capsys, tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    assert "no results.json under" in error_of(capsys, sweep, tmp_path / "empty")


def test_reference_numbers_are_joined_with_the_difference(sweep, capsys, tmp_path):
    ref = tmp_path / "reference.yaml"
    ref.write_text(
        'source: "Srivastava et al. 2014, Table 9"\nmetric: test/acc\n'
        'rows:\n  "reg=none": 0.80\n  "reg=dropout": {test/acc: 0.93, test/loss: 0.25}\n  "reg=maxout": 0.95\n'
    )
    main([str(sweep), "--metrics", "test/acc", "test/loss", "--reference", str(ref)])
    captured = capsys.readouterr()
    assert "reference: Srivastava et al. 2014, Table 9" in captured.out
    assert "reference rows without runs: reg=maxout" in captured.err
    assert "| ref test/acc (%) | Δ test/acc | ref test/loss | Δ test/loss |" in captured.out
    rows = md_rows(captured.out)
    assert rows["reg=none"][4:8] == ["80.00", "+1.00", "-", "-"]
    assert rows["reg=dropout"][4:8] == ["93.00", "-2.00", "0.2500", "+0.0500"]
    # The list form with `setting:` means the same; accuracies given in % are refused.
    ref.write_text("rows:\n  - setting: reg=dropout\n    test/acc: 0.93\n")
    rows = list(
        csv.DictReader(
            io.StringIO(table(capsys, sweep, "--metrics", "test/acc", "--format", "csv", "--reference", ref))
        )
    )
    dropout = next(r for r in rows if r["setting"] == "reg=dropout")
    assert float(dropout["test/acc_diff"]) == pytest.approx(0.91 - 0.93)
    ref.write_text("rows:\n  reg=none: 80.0\n")
    assert "write accuracies as fractions" in error_of(capsys, sweep, "--reference", ref)


def test_csv_is_one_column_per_statistic_and_nothing_else(sweep, capsys):
    out = table(capsys, sweep, "--metrics", "test/acc", "test/loss", "--format", "csv", "--baseline", "reg=none")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == [
        "setting",
        "n",
        "n_failed",
        "n_diverged",
        "n_interrupted",
        "n_running",
        "test/acc_mean",
        "test/acc_std",
        "test/acc_n",
        "test/loss_mean",
        "test/loss_std",
        "test/loss_n",
        "vs_baseline",
        "compared_metric",
        "t",
        "p_value",
        "p_holm",
        "test",
    ]
    by = {r["setting"]: r for r in rows}
    assert float(by["reg=none"]["test/acc_mean"]) == pytest.approx(0.81)  # raw fractions, as in results.json
    assert float(by["reg=none"]["test/acc_std"]) == pytest.approx(0.01)
    assert by["reg=l2"]["test/acc_std"] == "" and by["reg=l2"]["test/acc_n"] == "1" and by["reg=l2"]["n_failed"] == "1"
    assert len(out.splitlines()) == 4  # header + 3 settings, no prose


def _check_latex(tex: str, columns: int) -> None:
    """A LaTeX-aware check: balanced braces and math, booktabs rules, escaped specials, cells per row."""
    body = re.sub(r"\\[\\&%$#_{}]", "", tex)  # drop escaped characters
    assert body.count("{") == body.count("}") and body.count("$") % 2 == 0
    assert not re.search(
        r"(?<!\\)[_%#&^~]", re.sub(r"\\(begin|end)\{tabular\}\{\w*\}|\\\\|\$[^$]*\$", "", tex).replace(" & ", " ")
    ), tex
    lines = tex.strip().splitlines()
    assert lines[0] == "\\begin{tabular}{l" + "r" * (columns - 1) + "}" and lines[-1] == "\\end{tabular}"
    assert [lines[1], lines[3], lines[-2]] == ["\\toprule", "\\midrule", "\\bottomrule"]
    for line in [lines[2], *lines[4:-2]]:
        assert line.endswith("\\\\") and len(re.split(r"(?<!\\)&", line)) == columns, line


def test_latex_is_escaped_booktabs_and_compiles(tmp_path, capsys):
    root = tmp_path / "sweep"
    weird = "model.name=a_b%c&d#e$f{g}~h^i\\j"
    for s in range(2):
        write_run(root, f"w{s}", [weird, f"seed={s}"], **{"test/acc": 0.5 + s / 10, "test/loss": 1.0})
        write_run(root, f"p{s}", ["model.name=plain", f"seed={s}"], **{"test/acc": 0.6 + s / 10, "test/loss": 1.1})
    tex = table(
        capsys, root, "--format", "latex", "--metrics", "test/acc", "test/loss", "--baseline", "model.name=plain"
    )
    _check_latex(tex, columns=7)
    assert latex_escape(weird) in tex and r"test/acc (\%)" in tex and r"$55.00 \pm 7.07$" in tex
    if shutil.which("pdflatex") is None:
        return  # the parse check above stands in for a compiler
    doc = tmp_path / "t.tex"
    doc.write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage[T1]{fontenc}\n"
        f"\\begin{{document}}\n{tex}\\end{{document}}\n"
    )
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_plot_and_curves_write_pngs(tmp_path, capsys):
    root = tmp_path / "sweep"
    for s in range(2):
        write_run(root, f"a{s}", ["reg=none", f"seed={s}"], history=[0.5, 0.7 + s / 50, 0.8], **{"test/acc": 0.8})
        write_run(root, f"b{s}", ["reg=dropout", f"seed={s}"], history=[0.4, 0.6, 0.85 - s / 50], **{"test/acc": 0.84})
    bars, curves = tmp_path / "figs" / "bars.png", tmp_path / "curves.png"
    table(capsys, root, "--metrics", "test/acc", "--plot", bars, "--curves", curves)
    for png in (bars, curves):
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    rows = build(load_runs(root), ["test/acc"])
    from ablate.report.plots import curves as mean_curves

    epochs, mean, std = mean_curves(rows[1], "val/acc")  # reg=none: val/acc = train/acc - 0.05 in the fake history
    assert epochs == [0, 1, 2] and mean[1] == pytest.approx(0.66) and std[1] == pytest.approx(0.02 / math.sqrt(2))
    assert "no history.csv with val/nll" in error_of(capsys, root, "--curves", curves, "--curve-metric", "val/nll")


def test_module_runs_as_a_command():
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.report.table", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "--reference" in proc.stdout and "reference.yaml" in proc.stdout


# -- issue 16, item 13: tables and figures ---------------------------------------------------------------------------
def test_the_baseline_row_comes_first(sweep, tmp_path, capsys):
    out = table(capsys, sweep, "--metrics", "test/acc", "--baseline", "reg=none")
    assert list(md_rows(out)) == ["reg=none", "reg=dropout", "reg=l2"]
    csv_out = table(capsys, sweep, "--metrics", "test/acc", "--baseline", "reg=none", "--format", "csv")
    assert [r["setting"] for r in csv.DictReader(io.StringIO(csv_out))] == ["reg=none", "reg=dropout", "reg=l2"]
    # Per-group baselines: each group's baseline before the rows tested against it.
    root = tmp_path / "grid"
    for act in ("relu", "tanh"):
        for reg in ("dropout", "none"):
            for s in range(2):
                write_run(
                    root, f"{act}{reg}{s}", [f"model.activation={act}", f"reg={reg}", f"seed={s}"], **{"test/acc": 0.8}
                )
    rows = list(md_rows(table(capsys, root, "--metrics", "test/acc", "--baseline", "reg=none")))
    assert rows == [
        "model.activation=relu reg=none",
        "model.activation=relu reg=dropout",
        "model.activation=tanh reg=none",
        "model.activation=tanh reg=dropout",
    ]


def test_float_overrides_are_named_with_4_significant_digits(tmp_path, capsys):
    root = tmp_path / "search"
    lrs = ["0.0031622776601683794", "0.01", "1000000000.0", "0.12345678", "0.12345679"]
    for i, lr in enumerate(lrs):
        for s in range(2):
            write_run(root, f"{i}{s}", [f"optimizer.lr={lr}", f"seed={s}"], **{"test/acc": 0.5 + i / 10 + s / 100})
    out = table(capsys, root, "--metrics", "test/acc", "--baseline", "optimizer.lr=0.003162")
    rows = md_rows(out)
    assert next(iter(rows)) == "optimizer.lr=0.003162" and rows["optimizer.lr=0.003162"][-3] == "baseline"
    assert {"optimizer.lr=0.01", "optimizer.lr=1000000000.0"} <= set(rows)  # short values stay as written
    # Two values that 4 digits would merge keep their full spelling.
    assert {"optimizer.lr=0.12345678", "optimizer.lr=0.12345679"} <= set(rows)
    # CSV is for programs: the values as recorded; the exact spelling also finds the row.
    csv_out = table(capsys, root, "--metrics", "test/acc", "--format", "csv", "--baseline", f"optimizer.lr={lrs[0]}")
    assert next(csv.DictReader(io.StringIO(csv_out)))["setting"] == f"optimizer.lr={lrs[0]}"


def test_default_table_shows_nll_and_ece_when_recorded(tmp_path, capsys):
    root = tmp_path / "ls"
    for s in range(2):
        calib = {"test/nll": 0.2 + s / 100, "test/ece": 0.01}
        write_run(root, f"n{s}", ["reg=none", f"seed={s}"], **{"train/acc": 0.99, "test/acc": 0.9, **calib})
        worse = {"test/nll": 0.4 + s / 100, "test/ece": 0.07}
        write_run(root, f"l{s}", ["reg=label_smoothing", f"seed={s}"], **{"train/acc": 0.95, "test/acc": 0.9, **worse})
    out = table(capsys, root)
    assert "| setting | n | train/acc (%) | test/acc (%) | gap (%) | test/nll | test/ece |" in out
    assert md_rows(out)["reg=label_smoothing"][5:7] == ["0.4050 ± 0.0071", "0.0700 ± 0.0000"]


def _hydra_choices(run_dir, **choices):
    """The .hydra/hydra.yaml a real run has, with its config groups' choices."""
    (run_dir / ".hydra").mkdir()
    lines = "".join(f"      {k}: {v}\n" for k, v in choices.items())
    (run_dir / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    choices:\n{lines}")


def test_an_ensemble_metric_is_compared_with_a_baseline_from_another_folder(tmp_path, capsys):
    """`-m seed=0,1,2` (plain SGD) and `-m ensemble=swa seed=0,1,2` are two sweeps; one table compares them."""
    plain, swa = tmp_path / "plain", tmp_path / "swa"
    for s, (sgd, raw, avg) in enumerate([(0.80, 0.70, 0.90), (0.82, 0.72, 0.92), (0.81, 0.71, 0.91)]):
        _hydra_choices(write_run(plain, str(s), [f"seed={s}"], **{"test/acc": sgd}), ensemble="none")
        _hydra_choices(write_run(swa, str(s), ["ensemble=swa", f"seed={s}"], **{"test/acc": raw, "test/acc_swa": avg}))
    args = ["--metrics", "test/acc", "--baseline", "ensemble=none", "--row-metric", "ensemble=swa:test/acc_swa"]
    out = table(capsys, plain, swa, *args)
    assert out.startswith("6 runs, 2 settings")
    rows = md_rows(out)
    assert list(rows) == ["ensemble=none", "ensemble=swa"]  # the plain runs named by their default
    assert rows["ensemble=swa"][-3] == "better (test/acc_swa)" and rows["ensemble=swa"][3] == "91.00 ± 1.00"
    assert md_rows(table(capsys, plain, swa, plain / "0", *args))["ensemble=none"][1] == "3"  # a run counted once


def _bars(rows, metric="test/acc"):
    from ablate.report import plot_bars

    fig = plot_bars(rows, metric)
    ax = fig.axes[0]
    texts = ax.get_title()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    hatched = [p.get_hatch() for p in ax.patches]
    import matplotlib.pyplot as plt

    plt.close(fig)
    return ax.get_ylim()[0], texts, labels, hatched


def test_bar_chart_marks_the_baseline_and_zooms_only_on_a_significant_gap(tmp_path):
    root = tmp_path / "bars"
    for s, d in enumerate((-0.01, 0.01, 0.0)):
        write_run(root, f"n{s}", ["reg=none", f"seed={s}"], **{"test/acc": 0.90 + d})
        write_run(root, f"a{s}", ["reg=a", f"seed={s + 10}"], **{"test/acc": 0.905 - d})  # n.s.
        write_run(root, f"b{s}", ["reg=b", f"seed={s + 10}"], **{"test/acc": 0.95 + d})  # better
    runs = load_runs(root)
    no_gap = build([r for r in runs if "reg=b" not in r.overrides], ["test/acc"], baseline="reg=none")
    bottom, texts, labels, hatched = _bars(no_gap)
    assert bottom == 0 and "axis starts" not in texts  # nothing significant: bars from 0
    assert labels[0].startswith("reg=none (baseline)") and hatched[0] == "//" and not hatched[1]
    bottom, texts, _, _ = _bars(build(runs, ["test/acc"], baseline="reg=none"))
    assert bottom > 50 and f"axis starts at {bottom:.4g} %, not 0" in texts  # zoomed, and it says so
    assert _bars(build(runs, ["test/acc"]))[0] == 0  # no test at all: no zoom


# -- issue 16, item 15: the table's arguments, checked before any run is read ---------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--plot", "{file}/fig.png"], "--plot {file}/fig.png: {file} is a file, not a folder"),
        (["--curves", "{file}/sub/fig.png"], "--curves {file}/sub/fig.png: {file} is a file, not a folder"),
        (["--out", "{file}/t.md"], "--out {file}/t.md: {file} is a file"),
        (["--plot", "{dir}"], "--plot {dir} is a folder; give a file name"),
        (["--plot", "{dir}/fig.xyz"], "matplotlib cannot write .xyz; use one of"),
        (["--reference", "{binary}"], "--reference {binary} is not a text file"),
        (["--stale-after", "-1"], "argument --stale-after: must be a positive number of seconds, got '-1'"),
        (["--stale-after", "nan"], "argument --stale-after: must be a positive number of seconds"),
        (["--stale-after", "abc"], "argument --stale-after: must be a positive number of seconds, got 'abc'"),
        (["--alpha", "abc"], "argument --alpha: must be a number in (0, 1), got 'abc'; e.g. --alpha 0.05"),
        (["--alpha", "1"], "argument --alpha: must be a number in (0, 1)"),
        (["--format", "xlsx"], "argument --format: invalid choice: 'xlsx'"),
        (["--baseline", "none"], "--baseline takes a setting as typed, key=value"),
        (["--baseline", "reg=none", "--row-metric", "swa:test/acc_swa"], "--row-metric takes a setting as typed"),
        (["--over", ","], "--over takes comma-separated keys"),
        (["--metrics"], "argument --metrics: expected at least one argument"),
        (["--primary", "reg=dropout", "--expected-effect", "0.01", "--margin", "0.005"], "--primary needs --baseline"),
        (["--baseline", "reg=none", "--primary", "reg=dropout"], "--primary needs --expected-effect and --margin"),
        (["--margin", "0.01"], "--margin needs --primary SETTING"),
        (["--expected-effect", "0"], "argument --expected-effect: must be a nonzero number, got '0'"),
        (["--margin", "-1"], "argument --margin: must be a positive number, got '-1'"),
        (
            ["--baseline", "reg=none", "--primary", "dropout", "--expected-effect", "0.01", "--margin", "0.005"],
            "--primary takes a setting as typed",
        ),
        (
            ["--baseline", "reg=none", "--primary", "reg=dropout", "--expected-effect", "0.01", "--margin", "0.01"],
            "--margin 0.01 must be smaller than |--expected-effect| 0.01",
        ),
        (
            ["--baseline", "reg=none", "--primary", "reg=dropout", "--expected-effect", "2", "--margin", "0.5"],
            "test/acc is a fraction (as in results.json)",
        ),
    ],
)
def test_bad_table_arguments_are_one_line_errors_naming_the_option(sweep, tmp_path, capsys, args, expected):
    paths = {"file": tmp_path / "somefile.txt", "dir": tmp_path, "binary": tmp_path / "fig.png"}
    paths["file"].write_text("not a folder")
    paths["binary"].write_bytes(PNG_MAGIC + bytes(range(256)))
    args = [a.format(**paths) for a in args]
    assert expected.format(**paths) in error_of(capsys, sweep, *args)
    # Checked before any run is read: the same error with a folder that holds no runs.
    (tmp_path / "no_runs").mkdir(exist_ok=True)
    assert expected.format(**paths) in error_of(capsys, tmp_path / "no_runs", *args)


# -- issue 18, item 1: the verdict rule of experiments/README.md ------------------------------------------------------
def _primary(capsys, root, *extra, effect="0.005", margin="0.002", fmt="md"):
    args = [root, "--metrics", "test/acc", "--baseline", "ensemble=none", "--primary", "ensemble=swa"]
    return table(capsys, *args, "--expected-effect", effect, "--margin", margin, "--format", fmt, *extra)


def _verdict_line(out):
    return next(line for line in out.splitlines() if line.startswith("**Primary:"))


def test_primary_is_paired_by_seed_and_says_yes(tmp_path, capsys):
    """Seeds vary a lot, the within-seed gain (+0.3 points) is steady: Welch cannot see it, the paired test can."""
    from scipy.stats import ttest_ind, ttest_rel

    root = tmp_path / "paired"
    base = [0.80, 0.84, 0.78, 0.86, 0.82]
    gain = [0.0030, 0.0035, 0.0025, 0.0032, 0.0028]
    for s, (b, g) in enumerate(zip(base, gain, strict=True)):
        write_run(root, f"n{s}", ["ensemble=none", f"seed={s}"], seed=s, **{"test/acc": b})
        write_run(root, f"s{s}", ["ensemble=swa", f"seed={s}"], seed=s, **{"test/acc": b + g})
    swa = [b + g for b, g in zip(base, gain, strict=True)]
    assert ttest_ind(swa, base, equal_var=False).pvalue > 0.5  # unpaired: nothing to see
    p = ttest_rel(swa, base).pvalue
    out = _primary(capsys, root)
    line = _verdict_line(out)
    assert "(paired t, 5 pairs)" in line and f"p = {p:.3g}" in line and "**Verdict: yes**" in line
    assert "difference +0.30 points" in line and "minimum detectable" not in line
    assert "primary: ensemble=swa" in out.splitlines()[0] and "| p | p (Holm) |" in out
    assert md_rows(out)["ensemble=swa"][-3:] == ["primary: yes (paired t)", f"{p:.3g}", "-"]  # not in the Holm family
    row = {r["setting"]: r for r in csv.DictReader(io.StringIO(_primary(capsys, root, fmt="csv")))}["ensemble=swa"]
    assert (row["verdict"], row["test"], row["p_holm"]) == ("yes", "paired t", "")
    assert float(row["p_value"]) == pytest.approx(p, rel=1e-9)
    # The same gain expected the other way round (the paper claims it hurts): significant against it, "no".
    assert "**Verdict: no** (significant at alpha = 0.05 against" in _verdict_line(
        _primary(capsys, root, effect="-0.005")
    )


def test_primary_says_no_when_equivalent_within_the_margin(tmp_path, capsys):
    from scipy.stats import t as student_t

    root = tmp_path / "equivalent"
    base = [0.80, 0.84, 0.78, 0.86, 0.82]
    noise = [0.0010, -0.0010, 0.0005, -0.0005, 0.0]  # mean difference 0, sd of the differences 0.00079
    for s, (b, e) in enumerate(zip(base, noise, strict=True)):
        write_run(root, f"n{s}", ["ensemble=none", f"seed={s}"], seed=s, **{"test/acc": b})
        write_run(root, f"s{s}", ["ensemble=swa", f"seed={s}"], seed=s, **{"test/acc": b + e})
    line = _verdict_line(_primary(capsys, root, effect="0.01", margin="0.005"))
    se = statistics.stdev(noise) / math.sqrt(5)
    p_tost = student_t.sf(0.005 / se, 4)  # mean difference 0: both one-sided tests give the same p
    assert "**Verdict: no** (equivalent within ±margin: TOST p = " + f"{p_tost:.3g})" in line
    assert "p = 1" in line and "(paired t, 5 pairs)" in line
    # A margin too narrow for this spread: neither test decides.
    assert "**Verdict: inconclusive**" in _verdict_line(_primary(capsys, root, effect="0.01", margin="0.0001"))


def test_inconclusive_primary_reports_the_minimum_detectable_effect(tmp_path, capsys):
    """Different seeds per arm: Welch. The MDE is the difference a two-sided t-test at alpha finds with power 0.8."""
    from scipy.stats import nct
    from scipy.stats import t as student_t

    root = tmp_path / "unpaired"
    base, swa = [0.80, 0.82, 0.81], [0.81, 0.83, 0.79]  # sd 0.01 and 0.02, same mean
    for s, (b, a) in enumerate(zip(base, swa, strict=True)):
        write_run(root, f"n{s}", ["ensemble=none", f"seed={s}"], seed=s, **{"test/acc": b})
        write_run(root, f"s{s}", ["ensemble=swa", f"seed={s + 10}"], seed=s + 10, **{"test/acc": a})
    out = _primary(capsys, root)
    line = _verdict_line(out)
    assert "(Welch, 3 vs 3)" in line and "**Verdict: inconclusive**" in line and "| p (Welch) | p (Holm) |" in out
    # By hand: se^2 = 0.01^2/3 + 0.02^2/3, Welch-Satterthwaite df = se^4 / ((0.01^2/3)^2/2 + (0.02^2/3)^2/2) = 2.94;
    # power(d) = P(T' > t_crit) + P(T' < -t_crit), T' noncentral t with df and d / se; bisect power = 0.8.
    v1, v2 = 0.01**2 / 3, 0.02**2 / 3
    se, df = math.sqrt(v1 + v2), (v1 + v2) ** 2 / (v1**2 / 2 + v2**2 / 2)
    crit = student_t.ppf(0.975, df)
    lo, hi = 0.0, 100.0
    for _ in range(100):
        mid = (lo + hi) / 2
        power = nct.sf(crit, df, mid) + np.nan_to_num(nct.cdf(-crit, df, mid))  # NaN for a large mid: ~0
        lo, hi = (mid, hi) if power < 0.8 else (lo, mid)
    mde = lo * se
    assert 0.05 < mde < 0.07  # about 6 points: far beyond the expected 0.5
    assert f"minimum detectable effect at this n and std: {mde * 100:.2f} points" in line
    row = {r["setting"]: r for r in csv.DictReader(io.StringIO(_primary(capsys, root, fmt="csv")))}["ensemble=swa"]
    assert row["verdict"] == "inconclusive" and float(row["mde"]) == pytest.approx(mde, rel=1e-6)


def test_holm_adjustment_matches_a_hand_computation(tmp_path, capsys):
    from scipy.stats import ttest_ind

    from ablate.report.significance import holm

    # Sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    root = tmp_path / "family"
    base = [0.80, 0.82, 0.81]
    gaps = {"reg=a": 0.025, "reg=b": 0.024, "reg=c": 0.10}
    for s, b in enumerate(base):
        write_run(root, f"n{s}", ["reg=none", f"seed={s}"], **{"test/acc": b})
        for setting, g in gaps.items():
            write_run(root, f"{setting}{s}", [setting, f"seed={s + 10}"], **{"test/acc": b + g})
    raw = {k: ttest_ind([b + g for b in base], base, equal_var=False).pvalue for k, g in gaps.items()}
    assert raw["reg=a"] < 0.05 and raw["reg=b"] < 0.05  # each "significant" alone
    by_hand = {"reg=c": 3 * raw["reg=c"], "reg=a": max(3 * raw["reg=c"], 2 * raw["reg=a"])}
    by_hand["reg=b"] = max(by_hand["reg=a"], raw["reg=b"])
    rows = md_rows(table(capsys, root, "--metrics", "test/acc", "--baseline", "reg=none"))
    for setting, p_adj in by_hand.items():
        assert rows[setting][-1] == f"{p_adj:.3g}" and rows[setting][-2] == f"{raw[setting]:.3g}"
    assert rows["reg=c"][-3] == "better"
    assert rows["reg=a"][-3] == rows["reg=b"][-3] == "n.s."  # p_holm 0.0726 > 0.05: never "better"
    out = table(capsys, root, "--metrics", "test/acc", "--baseline", "reg=none", "--format", "csv")
    csv_rows = {r["setting"]: r for r in csv.DictReader(io.StringIO(out))}
    for setting, p_adj in by_hand.items():
        assert float(csv_rows[setting]["p_holm"]) == pytest.approx(p_adj, rel=1e-9)
        assert csv_rows[setting]["test"] == "Welch"


def test_a_gap_that_is_not_significant_is_never_called_better_or_worse(tmp_path, capsys):
    """Every row worded better/worse has a Holm-adjusted p below alpha; the rest say n.s., at any alpha."""
    root = tmp_path / "many"
    base = [0.80, 0.82, 0.81, 0.79]
    for s, b in enumerate(base):
        write_run(root, f"n{s}", ["reg=none", f"seed={s}"], **{"test/acc": b, "test/loss": 1 - b})
        for k, g in enumerate((0.004, 0.01, 0.02, 0.03, -0.02, -0.03, 0.06)):
            wobble = (-1) ** (s + k) * 0.004
            write_run(
                root,
                f"r{k}-{s}",
                [f"reg=r{k}", f"seed={s + 10}"],
                **{"test/acc": b + g + wobble, "test/loss": 1 - b - g},
            )
    for alpha in ("0.05", "0.01", "0.2"):
        for metric in ("test/acc", "test/loss"):
            out = table(
                capsys, root, "--metrics", metric, "--baseline", "reg=none", "--alpha", alpha, "--format", "csv"
            )
            tested = [r for r in csv.DictReader(io.StringIO(out)) if r["test"]]
            assert len(tested) == 7
            for r in tested:
                significant = float(r["p_holm"]) < float(alpha)
                assert (r["vs_baseline"] in ("better", "worse")) == significant, r
                assert significant or r["vs_baseline"] == "n.s."


def test_secondary_rows_that_share_the_baselines_seeds_are_tested_paired(tmp_path, capsys):
    """Same seeds on both sides: the per-seed differences are tested (scipy's ttest_rel), then Holm-corrected."""
    from scipy.stats import ttest_rel

    root = tmp_path / "paired"
    base, gains = [0.80, 0.85, 0.90, 0.83], [0.010, 0.012, 0.008, 0.011]  # seed spread hides a steady gain from Welch
    for s, (b, g) in enumerate(zip(base, gains, strict=True)):
        write_run(root, f"n{s}", ["reg=none", f"seed={s}"], seed=s, **{"test/acc": b})
        write_run(root, f"d{s}", ["reg=dropout", f"seed={s}"], seed=s, **{"test/acc": b + g})
    out = table(capsys, root, "--metrics", "test/acc", "--baseline", "reg=none", "--format", "csv")
    row = {r["setting"]: r for r in csv.DictReader(io.StringIO(out))}["reg=dropout"]
    assert row["test"] == "paired t" and row["vs_baseline"] == "better"
    expected = ttest_rel([b + g for b, g in zip(base, gains, strict=True)], base).pvalue
    assert float(row["p_value"]) == pytest.approx(expected, rel=1e-9)
