"""Signals, sweeps and run folders as a scheduler meets them: real processes, real signals."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FAST, REPO, read_results, run_cli

# 30 batches per epoch, an MLP; a schedule that may be extended or shortened on resume.
ARGS = [
    "scheduler=step",
    "data=synthetic",
    "data.synthetic.num_train=1800",
    "data.synthetic.num_test=160",
    "data.val_size=300",
    "data.batch_size=50",
    "model=mlp",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
    "~callbacks.progress_bar",
]


def _start(args: list[str], tmp_path: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _signal_after_checkpoint(
    proc: subprocess.Popen, pattern: str, root: Path, signum: int, timeout: float = 300
) -> Path:
    """Once a run under ``root`` has saved its first last.ckpt, stop it, check it still runs, and send ``signum``.

    SIGSTOP first, so a busy machine cannot let the run finish between the check and the signal.
    """
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        for last in root.glob(pattern):
            proc.send_signal(signal.SIGSTOP)
            assert '"status": "running"' in (last.parents[1] / "results.json").read_text(), "signalled too late"
            proc.send_signal(signum)
            proc.send_signal(signal.SIGCONT)
            return last
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no checkpoint {pattern} under {root}: {proc.communicate()[1][-2000:]}")


def _tree(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-2000:]
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.slow
def test_sigint_interrupts_a_run_that_then_resumes_in_its_own_folder(tmp_path):
    logs = tmp_path / "logs"
    args = [*ARGS, "trainer.max_epochs=30", f"paths.log_dir={logs}"]
    proc = _start(args, tmp_path)
    last = _signal_after_checkpoint(proc, "runs/*/checkpoints/last.ckpt", logs, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    run = last.parents[1]
    results = read_results(run)
    assert results["status"] == "interrupted"
    assert (
        "resume: python train.py scheduler=step data=synthetic" in results["error"]
        and f"ckpt_path={last}" in results["error"]
    )
    assert "status: interrupted" in stderr and "Traceback" not in stderr

    before = _tree(run)
    refused = run_cli([*args, "optimizer.lr=0.5", f"ckpt_path={last}"], tmp_path)
    assert refused.returncode == 2
    assert "was trained with optimizer.lr=0.003, not 0.5" in _one_error_line(refused.stderr)
    assert _tree(run) == before  # a refused resume touches nothing

    # Continued in place; a step schedule may be cut short (trainer.max_epochs may change).
    run_cli([*args, "trainer.max_epochs=3", f"ckpt_path={last}"], tmp_path, check=True)
    assert [p.name for p in (logs / "runs").iterdir()] == [run.name]  # one run
    results = read_results(run)
    assert results["status"] == "completed" and results["config"]["trainer"]["max_epochs"] == 3
    assert results["overrides"] == args and len(results["resumes"]) == 1
    assert results["resumes"][0]["changed"] == {"trainer.max_epochs": [30, 3]}


@pytest.mark.slow
def test_sigterm_interrupts_a_sweep_which_says_which_jobs_ran(tmp_path):
    sweep = tmp_path / "sweep"
    proc = _start(["-m", *ARGS, "trainer.max_epochs=1,30,30", f"hydra.sweep.dir={sweep}"], tmp_path)
    _signal_after_checkpoint(proc, "1/checkpoints/last.ckpt", sweep, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert (
        "sweep interrupted by SIGTERM: jobs that ran: job 0 completed, job 1 interrupted; later jobs did not start"
        in stderr
    )
    assert read_results(sweep / "1")["status"] == "interrupted" and not (sweep / "2").exists()


@pytest.mark.slow
def test_two_runs_started_at_once_get_two_folders(tmp_path):
    logs = tmp_path / "logs"
    procs = [_start([*FAST, "model=mlp", f"paths.log_dir={logs}", f"seed={seed}"], tmp_path) for seed in (1, 2)]
    for proc in procs:
        proc.communicate(timeout=300)
        assert proc.returncode == 0
    runs = sorted((logs / "runs").iterdir())
    assert len(runs) == 2
    assert sorted(read_results(run)["seed"] for run in runs) == [1, 2]
    for run in runs:
        checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert checkpoints == ["best-epoch000.ckpt", "best-epoch000.ckpt.sha256", "last.ckpt", "last.ckpt.sha256"]


@pytest.mark.slow
def test_slurm_requeue_signal_saves_and_the_requeued_job_continues_the_run(tmp_path):
    # What SLURM does on preemption with --signal=USR1@90 and a requeue: the same command, same job id, restarted.
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "PATH": os.environ["PATH"]}
    logs = tmp_path / "logs"
    args = [*ARGS, "trainer.max_epochs=4", f"paths.log_dir={logs}"]
    proc = _start(args, tmp_path, **slurm)
    last = _signal_after_checkpoint(proc, "runs/*/checkpoints/last.ckpt", logs, signal.SIGUSR1)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGUSR1
    assert "SLURM job 4242: requeue" in stdout  # scontrol is not installed here: "requeue failed"
    run = last.parents[1]
    assert read_results(run)["status"] == "interrupted" and read_results(run)["slurm_job_id"] == "4242"

    env = {**os.environ, **slurm, "SLURM_RESTART_COUNT": "1"}
    subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path, env=env, check=True, timeout=300)
    assert [p.name for p in (logs / "runs").iterdir()] == [run.name]
    results = read_results(run)
    assert results["status"] == "completed" and results["epochs"] == 4 and len(results["resumes"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("override", ["hydra.run.dir={file}/run", "paths.log_dir={file}", "-m paths.log_dir={file}"])
def test_a_run_or_sweep_folder_that_is_a_file_is_a_one_line_error(tmp_path, override):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    *flags, arg = override.format(file=blocker).split()
    proc = run_cli([*flags, *FAST, arg], tmp_path, timeout=120)
    assert proc.returncode == 2
    assert f"{blocker} is a file, not a folder" in _one_error_line(proc.stderr)
    assert blocker.read_text() == ""
