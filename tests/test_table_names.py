"""Rows named across folders: a key one sweep set and another left at its default is named in both rows
(``fill_defaults``), and a setting declared before the runs (a plan) still finds its row without that name."""

from __future__ import annotations

import csv
import io

from tests.conftest import write_run
from tests.test_table import error_of, md_rows, table

BASE = [0.80, 0.82, 0.81]


def two_folders(tmp_path):
    """opt=a and opt=b at the default 40 epochs in one folder; opt=b with epochs=60 typed in another."""
    first, second = tmp_path / "b40", tmp_path / "b60"
    for s, b in enumerate(BASE):
        config = {"_extra": {"config": {"epochs": 40}}}
        write_run(first, f"a{s}", ["opt=a", f"seed={s}"], seed=s, **{"test/acc": b}, **config)
        write_run(first, f"b{s}", ["opt=b", f"seed={s}"], seed=s, **{"test/acc": b + 0.01 + s / 1000}, **config)
        config60 = {"_extra": {"config": {"epochs": 60}}}
        write_run(
            second, f"c{s}", ["opt=b", "epochs=60", f"seed={s}"], seed=s, **{"test/acc": b + 0.02 - s / 500}, **config60
        )
    return first, second


def test_a_setting_without_a_default_named_by_another_folder_finds_its_row(tmp_path, capsys):
    first, second = two_folders(tmp_path)
    out = table(capsys, first, second, "--metrics", "test/acc", "--baseline", "opt=a", "--format", "csv")
    rows = {r["setting"]: r for r in csv.DictReader(io.StringIO(out))}
    assert set(rows) == {"epochs=40 opt=a", "epochs=40 opt=b", "epochs=60 opt=b"}  # epochs named in every row
    assert rows["epochs=40 opt=a"]["vs_baseline"] == "baseline"
    assert rows["epochs=60 opt=b"]["test"] == rows["epochs=40 opt=b"]["test"] == "paired t"  # both against opt=a
    primary = ["--primary", "opt=b epochs=60", "--expected-effect", "0.005", "--margin", "0.002"]
    out = table(capsys, first, second, "--metrics", "test/acc", "--baseline", "opt=a", *primary)
    assert "**Primary: epochs=60 opt=b vs baseline on test/acc**" in out
    assert md_rows(out)["epochs=40 opt=a"][-3] == "baseline"


def test_a_setting_two_rows_contain_is_not_guessed(tmp_path, capsys):
    first, second = two_folders(tmp_path)
    base = [first, second, "--metrics", "test/acc", "--baseline", "opt=a"]
    err = error_of(capsys, *base, "--primary", "opt=b", "--expected-effect", "0.005", "--margin", "0.002")
    assert "no row with setting 'opt=b' for --primary" in err and "epochs=40 opt=b; epochs=60 opt=b" in err


def grid_picks(tmp_path, *, second_a_rate: bool = False):
    """Each optimizer at the rate its grid picked (known only after the plan): rows named by optimizer and lr."""
    folder = tmp_path / "final"
    picks = {"a": 0.01, "b": 0.0003, "c": 0.0003}
    for s, b in enumerate(BASE):
        for opt, lr in picks.items():
            write_run(folder, f"{opt}{s}", [f"opt={opt}", f"lr={lr}", f"seed={s}"], seed=s, **{"test/acc": b + lr * s})
        if second_a_rate:
            write_run(folder, f"a2-{s}", ["opt=a", "lr=0.1", f"seed={s}"], seed=s, **{"test/acc": b})
    return folder


def test_a_wildcard_value_names_the_row_with_whatever_value_was_chosen(tmp_path, capsys):
    folder = grid_picks(tmp_path)
    primary = ["--primary", "opt=b lr=*", "--expected-effect", "0.005", "--margin", "0.002"]
    out = table(capsys, folder, "--metrics", "test/acc", "--baseline", "opt=a lr=*", *primary)
    rows = md_rows(out)
    assert rows["lr=0.01 opt=a"][-3] == "baseline"
    assert "**Primary: lr=0.0003 opt=b vs baseline on test/acc**" in out  # the row it found, by its full name
    assert rows["lr=0.0003 opt=b"][-3].startswith("primary")
    assert rows["lr=0.0003 opt=c"][-3] in {"n.s.", "better", "worse"}  # a secondary row against opt=a


def test_without_the_wildcard_a_chosen_value_is_not_guessed(tmp_path, capsys):
    folder = grid_picks(tmp_path)
    out = table(capsys, folder, "--metrics", "test/acc", "--baseline", "opt=a")
    rows = md_rows(out)  # read as a per-group baseline: opt=a at another lr would be each row's own baseline
    assert "(per group: the row with opt=a and the same other settings)" in out
    assert rows["lr=0.01 opt=a"][-3] == "baseline"
    assert rows["lr=0.0003 opt=b"][-3] == rows["lr=0.0003 opt=c"][-3] == "-"


def test_a_wildcard_that_two_rows_match_is_an_error(tmp_path, capsys):
    folder = grid_picks(tmp_path, second_a_rate=True)
    err = error_of(capsys, folder, "--metrics", "test/acc", "--baseline", "opt=a lr=*")
    assert "no row with setting 'opt=a lr=*' for --baseline" in err


def test_a_plan_declares_wildcard_rows(tmp_path, capsys):
    folder = grid_picks(tmp_path)
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        'metrics: [test/acc]\nbaseline: "opt=a lr=*"\nprimary: "opt=b lr=*"\nexpected_effect: 0.005\nmargin: 0.002\n'
    )
    rows = md_rows(table(capsys, folder, "--plan", plan))
    assert rows["lr=0.01 opt=a"][-3] == "baseline" and rows["lr=0.0003 opt=b"][-3].startswith("primary")
