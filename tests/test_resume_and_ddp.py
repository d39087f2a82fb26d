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
def test_killed_run_resumes_to_the_same_final_metrics(tmp_path):
    straight = run_cli([*RESUME_ARGS, f"hydra.run.dir={tmp_path / 'straight'}"], tmp_path, check=True)
    assert straight.returncode == 0

    killed_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *RESUME_ARGS, f"hydra.run.dir={killed_dir}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: a real crash
    proc.wait()
    assert last.exists(), "the run ended before writing its first checkpoint"
    killed = read_results(killed_dir)
    assert killed["status"] == "running"  # a killed run never looks finished
    epochs_done = torch.load(last, weights_only=True)["epoch"]
    assert epochs_done < 3, "the kill came too late to test resuming"

    resumed_dir = tmp_path / "resumed"
    run_cli([*RESUME_ARGS, f"ckpt_path={last}", f"hydra.run.dir={resumed_dir}"], tmp_path, check=True)
    a, b = read_results(tmp_path / "straight"), read_results(resumed_dir)
    assert b["status"] == "completed" and b["epochs"] == a["epochs"] == 4
    assert Path(b["checkpoint_best"]).parent == last.parent  # the resumed run continued the original folder
    for key in ("test/acc", "test/loss", "val/acc_best", "train/loss", "train/acc", "val/loss"):
        assert b["metrics"][key] == a["metrics"][key], key


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
    assert not (Path(run_dir) / "results.json.tmp").exists()
