"""The command line as a user meets it: help, unknown options, typos, impossible values."""

from __future__ import annotations

import pytest

from tests.conftest import FAST, read_results, run_cli


def test_help_lists_groups_and_options(tmp_path):
    proc = run_cli(["--help"], tmp_path, check=True)
    out = proc.stdout
    for line in (
        "optimizer: adadelta, adagrad, adam, adamw, lbfgs, momentum, nadam, nesterov, rmsprop, sgd",
        "scheduler: cosine, cyclic, exponential, multistep, multistep_fraction, none, onecycle, plateau, snapshot, "
        "step, swa, warmup_cosine",
        "ensemble: ema, nocycle, none, snapshot, swa",
        "data: cifar10, cifar100, digits, fashion_mnist, imagefolder, mnist, synthetic",
        "model: convnet, fmpnet, mlp, preresnet, resnet, transfer",
        "init: default, he_normal, he_uniform, orthogonal, xavier_normal, xavier_uniform",
    ):
        assert line in out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer=adm", "error: optimizer=adm is not an option of optimizer; choose one of adadelta"),
        ("optimizer.lrr=0.1", "Key 'lrr' is not in struct"),
    ],
)
def test_unknown_option_or_key_fails_before_training(tmp_path, override, expected):
    proc = run_cli([*FAST, override, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert expected in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_impossible_value_exits_with_one_line_error_and_failed_status(tmp_path):
    proc = run_cli([*FAST, "optimizer.lr=-0.1", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error_lines == ["error: optimizer.lr must be a positive number, got -0.1; e.g. optimizer.lr=0.01"]
    assert "Traceback" not in proc.stderr
    results = read_results(tmp_path / "run")
    assert results["status"] == "failed"
    assert "optimizer.lr" in results["error"]
    assert not (tmp_path / "run" / "checkpoints").exists()
