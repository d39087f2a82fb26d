"""The behaviour freeze (experiments/freeze/freeze.py, issue 17): same seed + same config gives the same metrics to
the last digit, run twice through train.py on this machine, and equal to the recorded baseline when that file was
recorded on this machine (its fingerprint: software, CPU, threads). Elsewhere the baseline is not comparable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, load_script

FREEZE = REPO / "experiments" / "freeze" / "freeze.py"
BASELINE = REPO / "experiments" / "freeze" / "baseline-short.json"
# The fastest cases of the short set (~5 s each): a plain run, a weight average, three regularizers at once.
FAST = ["digits/default", "digits/ema", "digits/reg_dropout_l2_dropconnect"]
THREADS = 1  # the baseline's


def load_freeze():
    return load_script(FREEZE, "freeze_script")


def changed(rows: list[tuple]) -> list[tuple]:
    return [row for row in rows if not row[4]]


def test_diff_flags_changed_missing_and_failed_cases():
    freeze = load_freeze()
    before = {"a": {"metrics": {"test/acc": "0.5", "val/acc": "0.25"}}, "b": {"metrics": {"test/acc": "0.5"}}}
    after = {"a": {"metrics": {"test/acc": "0.5000000000000001"}}, "b": {"metrics": {}, "error": "exit 1"}}
    rows = {(r[0], r[1]): r for r in freeze.diff(before, after)}
    assert rows["a", "test/acc"][4] is False  # one ulp is a difference
    assert rows["a", "val/acc"][3] == "<missing>" and rows["a", "val/acc"][4] is False
    assert rows["b", "error"][4] is False and rows["b", "test/acc"][4] is False
    assert freeze.exact(0.1 + 0.2) == "0.30000000000000004" and freeze.exact(3) == 3


@pytest.mark.slow
def test_short_cases_repeat_to_the_last_digit(tmp_path: Path, capsys: pytest.CaptureFixture):
    freeze = load_freeze()
    cases = freeze.cases_for("short", FAST)
    assert [c.name for c in cases] == FAST
    first = freeze.run_set(cases, tmp_path / "first", THREADS, verbose=False)
    second = freeze.run_set(cases, tmp_path / "second", THREADS, verbose=False)
    assert not [name for name, case in {**first, **second}.items() if "error" in case], first | second
    assert all(first[name]["metrics"] for name in FAST)
    assert changed(freeze.diff(first, second)) == []

    # --compare's verdict: exit 1 and a NO row when one metric moved by one ulp.
    fresh = {"fingerprint": {}, "cases": first}
    moved = json.loads(json.dumps(fresh))
    acc = float(moved["cases"]["digits/default"]["metrics"]["test/acc"])
    moved["cases"]["digits/default"]["metrics"]["test/acc"] = repr(acc + acc * 2**-52)
    assert freeze.compare(fresh, json.loads(json.dumps(fresh))) == 0
    assert freeze.compare(moved, fresh) == 1
    flagged = [line.split("|")[2].strip() for line in capsys.readouterr().out.splitlines() if "**NO**" in line]
    assert flagged == ["test/acc"]

    if BASELINE.exists():  # recorded on some machine; only that machine can reproduce it bit for bit
        recorded = json.loads(BASELINE.read_text())
        if recorded["fingerprint"] == freeze.fingerprint(THREADS):
            before = {name: recorded["cases"][name] for name in FAST}
            assert changed(freeze.diff(before, first)) == [], "behaviour changed since the baseline was recorded"
