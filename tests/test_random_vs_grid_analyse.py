"""experiments/random_vs_grid: the shifted grid (space.py); analyse.py selects on validation only, counts failed
trials as spent budget and judges random vs grid by the verdict rule, paired by search seed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import REPO, load_script


def _analyse():
    return load_script(REPO / "experiments/random_vs_grid/analyse.py", "rvg_analyse")


def _space():
    return load_script(REPO / "experiments/random_vs_grid/space.py", "rvg_space")


def _trial(study: Path, n: int, val: float | None, test: float, lr: float, wd: float = 0.001) -> None:
    (study / str(n)).mkdir(parents=True)
    record = {
        "status": "completed" if val is not None else "diverged",
        "overrides": [f"optimizer.lr={lr}", f"optimizer.weight_decay={wd}", "reg.dropout=0.1"],
        "metrics": {"val/acc_best": val, "test/acc": test} if val is not None else {},
        "wall_time_s": 1.0,
        "started_at": f"2026-01-01T00:00:0{n}+0000",
        "heartbeat_at": f"2026-01-01T00:00:0{n + 1}+0000",
    }
    (study / str(n) / "results.json").write_text(json.dumps(record))


def test_grid_offset_stays_in_its_cells_and_changes_with_the_seed() -> None:
    space = _space()
    lr = space.SPACE[0]
    # offset 0.5 is the grid of cell centres: 1e-3 .. 10 in thirds of 4 decades
    assert lr.grid_values(0.5, 3) == pytest.approx([10 ** (-3 + 2 / 3), 10 ** (-3 + 2), 10 ** (-3 + 10 / 3)], rel=1e-3)
    for seed in range(20):
        grid = space.grid_space(seed)
        for dim in space.SPACE:
            values = grid[dim.name]
            lo, hi = (math.log10(dim.lo), math.log10(dim.hi)) if dim.log else (dim.lo, dim.hi)
            width = (hi - lo) / 3
            scaled = [math.log10(v) if dim.log else v for v in values]
            for k, v in enumerate(scaled):  # value k lies in cell k, all three shifted by the same amount
                assert lo + k * width - 1e-3 <= v <= lo + (k + 1) * width + 1e-3
            assert scaled[1] - scaled[0] == pytest.approx(width, rel=1e-3)
    assert space.grid_space(0) != space.grid_space(1)
    assert space.overrides("grid", 3) == space.overrides("grid", 3)  # reproducible from the seed
    assert space.overrides("random", 0)[0] == "optimizer.lr=tag(log,interval(0.001,10))"


def test_selection_uses_validation_and_counts_failed_trials(tmp_path: Path) -> None:
    analyse = _analyse()
    # trial 0 diverged; trial 2 has the best test accuracy but not the best validation accuracy
    for sampler in ("random", "grid"):
        study = tmp_path / f"rvg-offset-{sampler}-s0"
        _trial(study, 0, None, 0.0, 5.0)
        _trial(study, 1, 0.90, 0.80, 0.01)
        _trial(study, 2, 0.85, 0.99, 0.1)
        _trial(study, 3, 0.90, 0.70, 0.02)  # ties trial 1: the first one stays selected
    studies = analyse.load_all(tmp_path, "rvg-offset")
    curve = analyse.best_so_far(studies["random"][0])
    assert [t.number for t in curve] == [0, 1, 1, 1]
    assert curve[0].val == float("-inf") and curve[-1].test == 0.80


def test_primary_is_paired_by_search_seed_and_follows_the_verdict_rule(tmp_path: Path) -> None:
    analyse = _analyse()
    # random beats grid by 2-4 points in every pair, while the seeds' own spread is 10 points: only pairing sees it
    for seed, base in enumerate((0.80, 0.90, 0.85, 0.70)):
        for sampler, gain in (("random", 0.02 + 0.01 * (seed % 3)), ("grid", 0.0)):
            study = tmp_path / f"rvg-offset-{sampler}-s{seed}"
            _trial(study, 0, base + gain, 0.5, 0.01)
            _trial(study, 1, base - 0.1, 0.9, 0.1)  # better on test, worse on validation: never selected
    studies = analyse.load_all(tmp_path, "rvg-offset")
    result = analyse.comparison(studies, budget=2)
    assert result.test == "paired t" and result.n == "4 pairs"
    assert result.diff == pytest.approx(0.0275) and result.verdict == "yes"
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.md").write_text("# hand-written title\n\nkept text\n")
    analyse.main(["--searches", str(tmp_path), "--out-dir", str(out), "--budgets", "1", "2"])
    text = (out / "results.md").read_text()
    assert text.startswith("# hand-written title\n\nkept text\n")
    assert "Equal budgets, same search seeds: **pass**" in text and "**Verdict: yes**" in text
    assert "| random | 4 | " in text and "| 0 | 82.00 / 50.00 | 0.01, 0.001, 0.1 | 80.00 / 50.00 |" in text
    assert (out / "best_vs_trials.png").read_bytes()[:4] == b"\x89PNG"


def test_gate_fails_without_a_dominant_learning_rate(tmp_path: Path) -> None:
    analyse = _analyse()
    for sampler in ("random", "grid"):
        study = tmp_path / f"rvg-offset-{sampler}-s0"
        _trial(study, 0, 0.90, 0.9, 0.01, wd=1e-5)
        _trial(study, 1, 0.89, 0.9, 0.1, wd=1e-5)  # lr moves accuracy by 1 point
        _trial(study, 2, 0.80, 0.9, 0.01, wd=1e-2)  # weight decay by 10
    ok, lines = analyse.gate(analyse.load_all(tmp_path, "rvg-offset"), budget=3)
    assert not ok and "**FAIL**" in lines[-1] and "**pass**" in lines[0]
    ok, lines = analyse.gate(analyse.load_all(tmp_path, "rvg-offset"), budget=4)  # a search short of the budget
    assert not ok and "**FAIL** (short: random-s0 (3), grid-s0 (3))" in lines[0]
