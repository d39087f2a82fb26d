"""history.csv: one dense row per epoch, written as training goes, continued (not repeated) on resume."""

from __future__ import annotations

import csv

from ablate.runtime.history import COLUMNS
from ablate.runtime.job import train


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


def test_history_keeps_finished_epochs_when_killed_and_drops_epochs_a_resume_repeats(tmp_path):
    from types import SimpleNamespace

    import torch

    from ablate.runtime.history import History

    path = tmp_path / "history.csv"
    opt = SimpleNamespace(param_groups=[{"lr": 0.1}])
    trainer = SimpleNamespace(
        is_global_zero=True, sanity_checking=False, current_epoch=0, optimizers=[opt], callback_metrics={}
    )
    cb = History(path)
    cb.on_train_start(trainer, None)
    for epoch in range(3):
        trainer.current_epoch = epoch
        cb.on_train_epoch_start(trainer, None)
        trainer.callback_metrics = {"val/loss": torch.tensor(1.0 / (epoch + 1)), "val/acc": torch.tensor(0.5)}
        cb.on_train_epoch_end(trainer, None)  # before the module logs train/*
        trainer.callback_metrics["train/loss"] = torch.tensor(float(epoch))
    # Killed (or diverged) inside epoch 2's end: epochs 0-1 are on disk, epoch 2's row has no train metrics.
    cb.on_exception(trainer, None, KeyboardInterrupt())
    rows = read(path)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert [r["train/loss"] for r in rows] == ["0.0", "1.0", ""]
    # Resumed from the checkpoint of epoch 1's end (training restarts at epoch 2): epoch 2 is written anew, once.
    resumed = History(path)
    resumed.load_state_dict(cb.state_dict())
    trainer.current_epoch = 2
    resumed.on_train_start(trainer, None)
    assert [r["epoch"] for r in read(path)] == ["0", "1"]
    resumed.on_train_epoch_end(trainer, None)
    resumed.on_train_end(trainer, None)
    rows = read(path)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"] and rows[2]["train/loss"] == "2.0"
    assert float(rows[2]["time"]) >= float(rows[1]["time"])
