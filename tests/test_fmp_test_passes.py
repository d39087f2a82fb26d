"""experiments/fractional_max_pooling/test_passes.py: the gain of R test passes over one is a paired difference per
run, pooled per setting and over all runs, with a paired t-test."""

from __future__ import annotations

from pathlib import Path

import pytest
from scipy.stats import ttest_rel

from tests.conftest import REPO, load_script, write_run


def test_paired_gain_per_setting_and_overall(tmp_path: Path, capsys) -> None:
    script = load_script(REPO / "experiments/fractional_max_pooling/test_passes.py", "fmp_test_passes")
    pairs = {"random": [(0.70, 0.74), (0.72, 0.75), (0.71, 0.76)], "pseudorandom": [(0.80, 0.81), (0.78, 0.80)]}
    for mode, runs in pairs.items():  # each mode swept into its own folder: both read as one set of runs
        for seed, (single, averaged) in enumerate(runs):
            metrics = {"test/acc_single_pass": single, "test/acc": averaged}
            write_run(tmp_path / mode, f"{mode}{seed}", [f"reg.fmp_mode={mode}", f"seed={seed}"], **metrics)
    write_run(tmp_path / "random", "failed", ["reg.fmp_mode=random", "seed=9"], status="failed")  # left out
    script.main([str(tmp_path / "random"), str(tmp_path / "pseudorandom")])
    out = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines()[2:]}
    assert out["reg.fmp_mode=random"].split("|")[2:4] == [" 3 ", " +4.00 "]  # gains 4, 3, 5 points
    assert out["reg.fmp_mode=pseudorandom"].split("|")[3] == " +1.50 "
    single = [s for runs in pairs.values() for s, _ in runs]
    averaged = [a for runs in pairs.values() for _, a in runs]
    p = ttest_rel(averaged, single).pvalue
    cells = out["all runs"].split("|")
    assert cells[2].strip() == "5" and float(cells[5]) == pytest.approx(p, rel=1e-2)


def test_each_run_gets_mcnemars_exact_test_holm_corrected(tmp_path: Path, capsys) -> None:
    from scipy.stats import binomtest

    script = load_script(REPO / "experiments/fractional_max_pooling/test_passes.py", "fmp_test_passes")
    counts = {0: (60, 20), 1: (12, 10)}  # (only the 12-pass average right, only the single pass right)
    for seed, (b, c) in counts.items():
        passes = {"passes": 12, "images": 10000, "only_averaged_right": b, "only_single_right": c}
        metrics = {"test/acc_single_pass": 0.8, "test/acc": 0.8 + (b - c) / 10000, "_extra": {"test_passes": passes}}
        write_run(tmp_path, f"r{seed}", ["reg.fmp_mode=random", f"seed={seed}"], seed=seed, **metrics)
    script.main([str(tmp_path)])
    lines = {
        line.split("|")[1].strip(): line.split("|") for line in capsys.readouterr().out.splitlines() if "seed=" in line
    }
    p0, p1 = binomtest(60, 80, 0.5).pvalue, binomtest(12, 22, 0.5).pvalue
    assert float(lines["reg.fmp_mode=random seed=0"][6]) == pytest.approx(p0, rel=5e-3)
    assert float(lines["reg.fmp_mode=random seed=0"][7]) == pytest.approx(2 * p0, rel=5e-3)  # Holm: the smaller x 2
    assert lines["reg.fmp_mode=random seed=0"][8].strip() == "R passes better"
    assert float(lines["reg.fmp_mode=random seed=1"][7]) == pytest.approx(p1, rel=5e-3)
    assert lines["reg.fmp_mode=random seed=1"][8].strip() == "n.s."
