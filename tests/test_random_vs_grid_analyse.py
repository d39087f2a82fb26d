"""experiments/random_vs_grid/analyse.py: best-so-far selects on validation only; failed trials spend budget."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import REPO, load_script


def _load():
    return load_script(REPO / "experiments/random_vs_grid/analyse.py", "rvg_analyse")


def _trial(study: Path, n: int, val: float | None, test: float, lr: float) -> None:
    (study / str(n)).mkdir(parents=True)
    record = {
        "status": "completed" if val is not None else "diverged",
        "overrides": [f"optimizer.lr={lr}", "optimizer.weight_decay=0.001", "reg.dropout=0.1"],
        "metrics": {"val/acc_best": val, "test/acc": test} if val is not None else {},
        "wall_time_s": 1.0,
        "started_at": f"2026-01-01T00:00:0{n}+0000",
        "heartbeat_at": f"2026-01-01T00:00:0{n + 1}+0000",
    }
    (study / str(n) / "results.json").write_text(json.dumps(record))


def test_selection_uses_validation_and_counts_failed_trials(tmp_path: Path) -> None:
    analyse = _load()
    # trial 0 diverged; trial 2 has the best test accuracy but not the best validation accuracy
    for sampler in ("random", "grid"):
        study = tmp_path / f"rvg-{sampler}-s0"
        _trial(study, 0, None, 0.0, 5.0)
        _trial(study, 1, 0.90, 0.80, 0.01)
        _trial(study, 2, 0.85, 0.99, 0.1)
        _trial(study, 3, 0.90, 0.70, 0.02)  # ties trial 1: the first one stays selected
    studies = analyse.load_all(tmp_path, "rvg")
    curve = analyse.best_so_far(studies["random"][0])
    assert [t.number for t in curve] == [0, 1, 1, 1]
    assert curve[0].val == float("-inf") and curve[-1].test == 0.80
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.md").write_text("# hand-written title\n\nkept text\n")
    analyse.main(["--searches", str(tmp_path), "--out-dir", str(out), "--budgets", "2", "4"])
    text = (out / "results.md").read_text()
    assert text.startswith("# hand-written title\n\nkept text\n")
    assert "| random | 1 | 90.00 | 90.00 | 80.00 |" in text
    assert "| random-s0 | 1 | 90.00 | 80.00 | 0.01 | 0.001 | 0.1 | 1 |" in text
    assert (out / "best_vs_trials.png").read_bytes()[:4] == b"\x89PNG"
