"""Seeds, divergence and impossible values: the run says what went wrong and records it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ablate.runtime.job import main, train
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


def _corrupt_middle(path: Path) -> None:
    """4 KiB of random bytes in the middle of the file, as a bad copy or a failing disk would leave it."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = os.urandom(4096)
    path.write_bytes(bytes(data))


def test_a_corrupted_checkpoint_without_its_sha256_is_refused_by_every_reader(make_cfg, tmp_path, capsys):
    """No .sha256 beside it (copied elsewhere): the zip archive's own CRCs catch the damage before torch.load, which
    would load the damaged bytes as weights (resume then trained and ended "diverged")."""
    from ablate.evaluation.saved_runs import main as evaluate_main
    from tests.test_evaluate import _cfg as evaluate_cfg

    source = make_cfg("model=mlp", "model.width=16", "model.depth=1", subdir="src")
    main(source)
    checkpoints = Path(read_results(Path(source.paths.output_dir))["checkpoint_last"]).parent
    for sums in checkpoints.glob("*.sha256"):
        sums.unlink()
    last = checkpoints / "last.ckpt"
    _corrupt_middle(last)

    def refused(run: Callable[[], object]) -> str:
        with pytest.raises(SystemExit) as exit_info:
            run()
        assert exit_info.value.code == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and f"checkpoint {last} is corrupted" in lines[0], lines
        return lines[0]

    assert "fails its CRC check" in refused(lambda: main(make_cfg("model=mlp", f"ckpt_path={last}", subdir="resume")))
    refused(lambda: evaluate_main(evaluate_cfg(tmp_path / "eval", f"run={last.parents[1]}", "weights=last")))
    transfer = ("model=transfer", "model.backbone=mlp", f"model.init_from={last}")
    refused(lambda: main(make_cfg(*transfer, subdir="transfer")))
