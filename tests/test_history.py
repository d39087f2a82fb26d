"""history.csv: one dense row per epoch, written as training goes, continued (not repeated) on resume."""

from __future__ import annotations

import csv

from ablate.history import COLUMNS
from ablate.run import train


def read(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_history_has_one_dense_row_per_epoch_and_a_resume_continues_it(make_cfg, tmp_path):
    cfg = make_cfg("trainer.max_epochs=2", "scheduler=none", subdir="run")
    train(cfg)
    path = tmp_path / "run" / "history.csv"
    rows = read(path)
    assert tuple(rows[0]) == COLUMNS
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for r in rows:  # dense: every column filled in every row, numbers that plot directly
        values = {k: float(v) for k, v in r.items()}
        assert 0.0 <= values["train/acc"] <= 1.0 and 0.0 <= values["val/acc"] <= 1.0
        assert values["train/loss"] > 0 and values["val/loss"] > 0 and values["lr"] > 0
    assert float(rows[1]["time"]) > float(rows[0]["time"]) > 0
    assert rows[0]["train/loss"] != rows[1]["train/loss"]  # each row holds its own epoch's train metrics

    # A resume into the same folder (the way an interrupted run continues) appends epoch 2 and repeats nothing.
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    resumed = make_cfg("trainer.max_epochs=3", "scheduler=none", f"ckpt_path={last}", subdir="run")
    train(resumed)
    rows2 = read(path)
    assert [int(r["epoch"]) for r in rows2] == [0, 1, 2]
    assert rows2[:2] == rows
    assert float(rows2[2]["time"]) > float(rows[1]["time"])  # time counts on from the checkpoint
