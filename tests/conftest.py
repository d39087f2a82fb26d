"""Shared test helpers: Hydra compose with fast overrides, and a subprocess runner for train.py."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"

# Small, learnable and quick: a few hundred synthetic images, one epoch, no progress bar redraws.
FAST = [
    "data=synthetic",
    "data.synthetic.num_train=320",
    "data.synthetic.num_test=160",
    "data.val_size=64",
    "data.batch_size=32",
    "data.eval_batch_size=128",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
    "~callbacks.progress_bar",
]


def compose_config(overrides: list[str], output_dir: Path, fast: bool = True) -> DictConfig:
    base = FAST if fast else []
    if any(o.startswith("data=") for o in overrides):  # another data set: drop the synthetic-only knobs
        base = [o for o in base if not o.startswith(("data=", "data.synthetic"))]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[*base, f"paths.output_dir={output_dir}", *overrides])


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def make(*overrides: str, fast: bool = True, subdir: str = "run") -> DictConfig:
        return compose_config(list(overrides), tmp_path / subdir, fast=fast)

    return make


def run_cli(
    args: list[str], tmp_path: Path, timeout: float = 300, check: bool = False, script: str = "train.py"
) -> subprocess.CompletedProcess:
    """Run an entry point like a user would, with its run directory under tmp_path."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    cmd = [sys.executable, str(REPO / script), *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def read_results(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "results.json").read_text())


def write_run(root, name, overrides, status="completed", seed=None, history=None, train_loss=None, **metrics) -> Path:
    """A fake run folder for the report tools: results.json (status, overrides, metrics) and, given per-epoch
    accuracies (``history``) or training losses (``train_loss``; else 1 / (epoch + 1)), a history.csv; no training."""
    run = root / name
    run.mkdir(parents=True)
    data = {"status": status, "overrides": overrides, "seed": seed, "metrics": metrics}
    data.update(metrics.pop("_extra", {}))
    (run / "results.json").write_text(json.dumps(data))
    if train_loss is not None and not history:
        history = [0.5] * len(train_loss)
    if history:
        losses = train_loss if train_loss is not None else [1 / (e + 1) for e in range(len(history))]
        lines = ["epoch,train/loss,train/acc,val/loss,val/acc,lr,time"]
        lines += [
            f"{e},{loss},{a},{1.2 / (e + 1)},{a - 0.05},0.1,{e + 1.0}"
            for e, (a, loss) in enumerate(zip(history, losses, strict=True))
        ]
        (run / "history.csv").write_text("\n".join(lines) + "\n")
    return run


def load_script(path: Path, name: str) -> ModuleType:
    """An experiment script (not part of the package) imported as a module, to test its functions."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def snapshot_alpha(t: int, total: int, cycles: int, base_lr: float) -> float:
    """Huang et al. 2017, eq. (2): alpha0/2 (cos(pi i / L) + 1) at step i of a cycle of length L, t = 1..T, with the
    cycles' lengths T // M and the remainder spread over the first cycles (126, 5 -> 26, 25, 25, 25, 25; the paper's
    ceil(T / M) periods when M divides T): every cycle anneals fully. Written out here, not imported from
    ablate.optim.schedulers, so the tests check the schedule against the paper rather than against itself."""
    start = 0
    for k in range(cycles):
        length = total // cycles + (1 if k < total % cycles else 0)
        if t - 1 < start + length:
            return base_lr / 2 * (math.cos(math.pi * (t - 1 - start) / length) + 1)
        start += length
    raise AssertionError(t)
