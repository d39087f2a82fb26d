"""Subprocess runs like a user's: a killed run resumed from last.ckpt, and DDP with two CPU processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ablate.data import DataModule
from ablate.models import ConvNet
from tests.conftest import REPO, read_results, run_cli

RESUME_ARGS = [
    "data=synthetic",
    "data.synthetic.num_train=1800",
    "data.synthetic.num_test=300",
    "data.synthetic.noise=0.8",
    "data.val_size=300",
    "data.batch_size=50",
    "trainer.max_epochs=4",
    "trainer.enable_model_summary=false",
    "~callbacks.progress_bar",
    "seed=5",
]


@pytest.mark.slow
def test_run_killed_during_a_checkpoint_write_resumes_in_its_own_folder_to_the_same_metrics(tmp_path):
    tmpdir = tmp_path / "tmpdir"  # $TMPDIR of every process: must stay empty
    tmpdir.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmpdir)}
    straight = run_cli([*RESUME_ARGS, f"hydra.run.dir={tmp_path / 'straight'}"], tmp_path, check=True)
    assert straight.returncode == 0

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *RESUME_ARGS, f"hydra.run.dir={killed_dir}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = killed_dir / "checkpoints"
    last = checkpoints / "last.ckpt"
    mid_write = False
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        # kill -9 while a checkpoint is being written (its same-folder temporary file exists), once one is saved
        if last.exists() and any(checkpoints.glob(".*.tmp")):
            mid_write = True
            break
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: a real crash
    proc.wait()
    assert mid_write, "the run ended before a checkpoint write could be interrupted"
    killed = read_results(killed_dir)
    assert killed["status"] == "running"  # what the dead process left ...
    from ablate.runtime.results import effective_status

    assert effective_status(killed) == "interrupted"  # ... and what readers are told
    assert torch.load(last, weights_only=True)["epoch"] < 3, "the kill came too late to test resuming"

    # No run folder given: the checkpoint of an interrupted run continues that run, in its folder.
    logs = tmp_path / "logs"
    resumed = run_cli([*RESUME_ARGS, f"ckpt_path={last}", f"paths.log_dir={logs}"], tmp_path, check=True)
    assert resumed.returncode == 0 and not logs.exists()
    a, b = read_results(tmp_path / "straight"), read_results(killed_dir)
    assert b["status"] == "completed" and b["epochs"] == a["epochs"] == 4
    assert b["overrides"] == killed["overrides"] and len(b["resumes"]) == 1  # one run, its own settings
    assert "ckpt_path" not in (killed_dir / ".hydra" / "overrides.yaml").read_text()
    for key in ("test/acc", "test/loss", "val/acc_best", "train/loss", "train/acc", "val/loss"):
        assert b["metrics"][key] == a["metrics"][key], key
    assert not list(killed_dir.rglob("*.tmp")) and not list(tmpdir.iterdir())  # no debris anywhere
    assert torch.load(last, weights_only=True)["epoch"] == 3


@pytest.mark.slow
def test_ddp_cpu_trains_on_disjoint_shards_and_reduces_metrics(tmp_path):
    run_dir = tmp_path / "ddp"
    args = [
        "trainer=ddp_cpu",
        "data=synthetic",
        "data.synthetic.num_train=640",
        "data.synthetic.num_test=203",
        "data.val_size=64",
        "data.batch_size=32",
        "trainer.max_epochs=2",
        "test_weights=last",
        "~callbacks.progress_bar",
        f"hydra.run.dir={run_dir}",
    ]
    run_cli(args, tmp_path, check=True, timeout=400)
    results = read_results(run_dir)
    assert results["status"] == "completed" and results["world_size"] == 2
    assert results["global_step"] == 2 * (576 // 2 // 32)  # 2 epochs; each rank steps through half of 576 images

    # The DDP-reduced test accuracy equals the accuracy of the saved weights on the whole test set.
    checkpoint = torch.load(results["checkpoint_last"], weights_only=True)
    dm = DataModule(name="synthetic", val_size=64, synthetic=results["config"]["data"]["synthetic"])
    dm.prepare()
    model_cfg = {k: v for k, v in results["config"]["model"].items() if k != "_target_"}
    model = ConvNet(input_shape=dm.input_shape, num_classes=dm.num_classes, **model_cfg)
    state = checkpoint["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    model.eval()
    x = (dm.x_test.float() / 255 - state["mean"]) / state["std"]
    with torch.no_grad():
        acc = (model(x).argmax(1) == dm.y_test).float().mean().item()
    assert results["metrics"]["test/acc"] == pytest.approx(acc, abs=1e-6)
    # Uneven shards (102 + 101 test images) gathered for the extended metrics: NLL over all 203 = the summed loss.
    assert results["metrics"]["test/nll"] == pytest.approx(results["metrics"]["test/loss"], rel=1e-4)
    assert len(results["metrics_per_class"]["test/acc"]) == dm.num_classes
    assert not list(Path(run_dir).rglob("*.tmp"))
