"""--secondary-metric: rows tested on further metrics (NLL, ECE beside accuracy), each row on its own variant of
the metric, Holm-corrected in one family with the rows' own tests (ablate.report.secondary)."""

from __future__ import annotations

import csv
import io
import re

import pytest
from scipy.stats import ttest_rel

from ablate.report.significance import holm
from tests.conftest import write_run
from tests.test_table import error_of, md_rows, table

SGD_ACC = [0.870, 0.875, 0.872, 0.878]
SWA_ACC = [0.871, 0.877, 0.871, 0.880]  # the average: no clear accuracy gain
SGD_NLL = [0.48, 0.50, 0.47, 0.52]
SWA_NLL = [0.44, 0.455, 0.43, 0.47]  # the average: a steady NLL gain
ITERATE_NLL = [0.60, 0.49, 0.51, 0.70]  # the SGD iterate the SWA run also recorded: not what is claimed


@pytest.fixture
def swa(tmp_path):
    root = tmp_path / "swa"
    for s in range(4):
        base = {"test/acc": SGD_ACC[s], "test/nll": SGD_NLL[s], "test/ece": 0.07 + s / 1000}
        write_run(root, f"n{s}", ["ensemble=none", f"seed={s}"], seed=s, **base)
        avg = {"test/acc": 0.86, "test/acc_swa": SWA_ACC[s], "test/nll": ITERATE_NLL[s], "test/nll_swa": SWA_NLL[s]}
        write_run(root, f"s{s}", ["ensemble=swa", f"seed={s}"], seed=s, **avg)
    return root


ARGS = ["--metrics", "test/acc", "--baseline", "ensemble=none", "--row-metric", "ensemble=swa:test/acc_swa"]


def _secondary_lines(out: str) -> dict[str, str]:
    """metric tested on the row's side -> its line under the table."""
    lines = [line for line in out.splitlines() if line.startswith("- ensemble=swa: ")]
    return {line.split(": ")[1].split()[0]: line for line in lines}


def test_each_row_is_tested_on_its_own_variant_of_the_secondary_metric(swa, capsys):
    out = table(capsys, swa, *ARGS, "--secondary-metric", "test/nll")
    line = _secondary_lines(out)["test/nll_swa"]
    assert "test/nll_swa vs test/nll" in line and "paired t, 4 pairs" in line
    p = ttest_rel(SWA_NLL, SGD_NLL).pvalue  # the average's NLL, not the iterate's (ITERATE_NLL)
    assert f"p = {p:.3g}" in line
    p_row = ttest_rel(SWA_ACC, SGD_ACC).pvalue
    adjusted = holm([p_row, p])
    assert f"Holm p = {adjusted[1]:.3g}" in line and line.endswith("**better**")
    row = md_rows(out)["ensemble=swa"]
    assert row[-1] == f"{adjusted[0]:.3g}"  # the row's own test is corrected in the same family of 2
    assert "together with the rows' tests: 2 tests" in out


def test_the_primary_rows_key_test_stays_out_of_the_family(swa, capsys):
    primary = ["--primary", "ensemble=swa", "--expected-effect", "0.003", "--margin", "0.001"]
    out = table(capsys, swa, *ARGS, *primary, "--secondary-metric", "test/nll")
    p = ttest_rel(SWA_NLL, SGD_NLL).pvalue
    assert f"Holm p = {p:.3g}" in _secondary_lines(out)["test/nll_swa"]  # a family of one: unadjusted
    assert "together with the rows' tests: 1 test)" in out
    assert "Verdict: " in out  # the primary is judged on its own, as before


def test_a_variant_no_run_recorded_is_named_not_tested(swa, capsys):
    out = table(capsys, swa, *ARGS, "--secondary-metric", "test/nll", "--secondary-metric", "test/ece")
    assert "- ensemble=swa: test/ece_swa not recorded, not tested" in out
    assert "test/ece_swa vs" not in out


def test_without_a_row_metric_a_row_is_tested_on_the_metric_itself(swa, capsys):
    out = table(capsys, swa, "--metrics", "test/acc", "--baseline", "ensemble=none", "--secondary-metric", "test/nll")
    line = _secondary_lines(out)["test/nll"]
    assert f"p = {ttest_rel(ITERATE_NLL, SGD_NLL).pvalue:.3g}" in line
    assert re.search(r"\*\*(n\.s\.|better|worse)\*\*$", line)


def test_secondary_metrics_from_a_plan_and_their_errors(swa, capsys, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("baseline: ensemble=none\nrow_metric: {ensemble=swa: test/acc_swa}\nsecondary_metric: [test/nll]\n")
    assert "test/nll_swa vs test/nll" in table(capsys, swa, "--metrics", "test/acc", "--plan", plan)
    assert "--secondary-metric needs --baseline" in error_of(capsys, swa, "--secondary-metric", "test/nll")
    assert "unknown metric 'test/nl'" in error_of(capsys, swa, *ARGS, "--secondary-metric", "test/nl")


def test_csv_has_columns_per_secondary_metric(swa, capsys):
    md = table(capsys, swa, *ARGS, "--secondary-metric", "test/nll", "--secondary-metric", "test/ece")
    out = table(
        capsys, swa, *ARGS, "--secondary-metric", "test/nll", "--secondary-metric", "test/ece", "--format", "csv"
    )
    rows = {r["setting"]: r for r in csv.DictReader(io.StringIO(out))}
    swa_row, base = rows["ensemble=swa"], rows["ensemble=none"]
    assert swa_row["test/nll_compared_metric"] == "test/nll_swa" and swa_row["test/nll_test"] == "paired t"
    assert float(swa_row["test/nll_diff"]) == pytest.approx(sum(SWA_NLL) / 4 - sum(SGD_NLL) / 4)
    assert f"Holm p = {float(swa_row['test/nll_p_holm']):.3g}" in _secondary_lines(md)["test/nll_swa"]
    assert swa_row["test/nll_vs_baseline"] == "better"
    assert swa_row["test/ece_vs_baseline"] == "" and base["test/nll_vs_baseline"] == ""  # not recorded; the baseline


def test_build_tests_secondary_metrics_as_the_table_does(swa, capsys):
    """Notebooks' build() takes secondary_metrics: the same tests and Holm family as --secondary-metric."""
    from ablate.errors import ConfigError
    from ablate.report import build, load_runs

    runs = load_runs(swa)
    row_metrics = {"ensemble=swa": "test/acc_swa"}
    metrics = ["test/acc", "test/acc_swa"]
    rows = build(runs, metrics, baseline="ensemble=none", row_metrics=row_metrics, secondary_metrics=["test/nll"])
    test = next(r for r in rows if r.setting == "ensemble=swa").secondary["test/nll"]
    out = table(capsys, swa, *ARGS, "--secondary-metric", "test/nll")
    assert test.line() == _secondary_lines(out)["test/nll_swa"]
    assert test.verdict == "better" and test.metric == "test/nll_swa"
    with pytest.raises(ConfigError, match="need a baseline"):
        build(runs, ["test/acc"], secondary_metrics=["test/nll"])
