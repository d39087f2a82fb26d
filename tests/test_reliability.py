"""Seeds, divergence and impossible values: the run says what went wrong and records it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.run import main, train
from tests.conftest import read_results


def test_same_seed_same_metrics_and_seed_zero_is_a_seed(make_cfg):
    runs = [train(make_cfg("seed=0", "model=convnet", subdir=f"r{i}"))["metrics"] for i in range(2)]
    assert runs[0] == runs[1]
    other = train(make_cfg("seed=1", "model=convnet", subdir="r2"))["metrics"]
    assert other["train/loss"] != runs[0]["train/loss"]


def test_nan_loss_stops_the_run_and_marks_it_diverged(make_cfg):
    cfg = make_cfg("optimizer=sgd", "optimizer.lr=1e12", "model=mlp", "nan_check_every=1", "trainer.max_epochs=3")
    with pytest.raises(SystemExit) as exit_info:
        main(cfg)
    assert exit_info.value.code == 3
    results = read_results(Path(cfg.paths.output_dir))
    assert results["status"] == "diverged"
    assert "NaN" in results["error"] and "lower optimizer.lr" in results["error"]
    assert "test/acc" not in results["metrics"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.lr=-0.1"], "optimizer.lr must be a positive number, got -0.1"),
        (["optimizer=sgd", "optimizer.momentum=-1"], "optimizer.momentum must be a number in [0, 1)"),
        (["model=mlp", "model.dropout=1.5"], "model.dropout must be a number in [0, 1), got 1.5"),
        (["data.val_size=1.5"], "data.val_size must be a fraction in [0, 1)"),
        (["data.num_folds=5", "data.fold=5"], "data.fold must be in [0, 5)"),
        (["model=resnet", "model.depth=21"], "not a CIFAR ResNet depth"),
        (["seed=abc"], "seed must be an integer, got 'abc'"),
        (["trainer.max_epochs=0"], "trainer.max_epochs must be an integer >= 1"),
        (["+optimizer.lrr=0.1"], "lrr"),
        (["scheduler=onecycle", "scheduler.fn.pct_start=1.5"], "scheduler.fn.pct_start must be a number in (0, 1)"),
        (["scheduler=snapshot", "scheduler.fn.cycles=0"], "scheduler.fn.cycles must be an integer >= 1"),
        (["ckpt_path=/nonexistent/last.ckpt"], "does not exist"),
        (["scheduler=plateau", "scheduler.monitor=val/f1"], "scheduler.monitor must be one of val/loss"),
        (["scheduler=plateau", "data.val_size=0"], "scheduler.monitor=val/loss needs a validation split"),
        (["model=mlp", "model.dropout=0.2", "reg=dropout"], "model.dropout=0.2 and reg.dropout=0.5 set the same thing"),
        (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val must be a number >= 0"),
        (["trainer.gradient_clip_algorithm=l2"], "trainer.gradient_clip_algorithm must be one of norm, value"),
        (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches must be an integer >= 1"),
        (["optimizer=lbfgs", "trainer.accumulate_grad_batches=2"], "use a larger data.batch_size"),
    ],
)
def test_impossible_values_fail_before_training(make_cfg, overrides, message, capsys):
    cfg = make_cfg(*overrides)
    with pytest.raises(SystemExit) as exit_info:
        main(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    results = read_results(Path(cfg.paths.output_dir))
    assert results["status"] == "failed" and message in results["error"]
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_missing_data_lists_what_was_tried(make_cfg, tmp_path, capsys):
    cfg = make_cfg("data=mnist", f"data.data_dir={tmp_path / 'empty'}", "data.download=false")
    with pytest.raises(SystemExit):
        main(cfg)
    err = capsys.readouterr().err
    assert "data set 'mnist' not found" in err and str(tmp_path / "empty") in err and "fix:" in err
