"""A sweep survives an interruption: the same multirun command, run again into its folder, skips the completed jobs,
resumes the interrupted one from its last.ckpt, reruns failed ones and runs the rest (ablate.runtime.sweep_continue)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from ablate.runtime import sweep_continue
from ablate.runtime.job import main
from tests.conftest import read_results, run_cli
from tests.test_signals import ARGS, _start

# The numbers a resumed run must reproduce exactly (times and the rest of the record may differ).
SAME = ("test/", "val/", "train/")


def _stop_job_1_mid_way(proc, sweep: Path, timeout: float = 300) -> None:
    """Once job 0 has completed and job 1 has saved its first last.ckpt, SIGTERM the sweep (SIGSTOP first, so a busy
    machine cannot let job 1 finish between the check and the signal)."""
    import time

    last = sweep / "1" / "checkpoints" / "last.ckpt"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():
            proc.send_signal(signal.SIGSTOP)
            assert read_results(sweep / "0")["status"] == "completed"
            assert read_results(sweep / "1")["status"] == "running", "signalled too late"
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)
            return
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"job 1 saved no last.ckpt: {proc.communicate()[1][-2000:]}")


@pytest.mark.slow
def test_a_killed_sweep_run_again_skips_resumes_and_runs_the_rest(tmp_path):
    sweep = tmp_path / "sweep"
    # Jobs 1 and 2 are the same run: job 2, never interrupted, is the reference for job 1's resumed numbers.
    command = ["-m", *ARGS, "trainer.max_epochs=1,2,2", f"hydra.sweep.dir={sweep}"]
    proc = _start(command, tmp_path)
    _stop_job_1_mid_way(proc, sweep)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert f"continue it: python train.py -m {' '.join(ARGS[:2])}" in stderr and f"hydra.sweep.dir={sweep}" in stderr
    assert read_results(sweep / "1")["status"] == "interrupted" and not (sweep / "2").exists()
    job_0 = sweep / "0" / "results.json"
    before = (job_0.read_bytes(), job_0.stat().st_mtime_ns)

    again = run_cli(command, tmp_path, check=True)
    assert (job_0.read_bytes(), job_0.stat().st_mtime_ns) == before  # skipped: not even rewritten
    assert "job 0 (" in again.stdout and "): skipped: completed before" in again.stdout
    resumed, reference = read_results(sweep / "1"), read_results(sweep / "2")
    assert resumed["status"] == reference["status"] == "completed"
    assert len(resumed["resumes"]) == 1 and resumed["resumes"][0]["ckpt_path"].endswith("1/checkpoints/last.ckpt")
    assert "resumes" not in reference
    numbers = {k: v for k, v in resumed["metrics"].items() if k.startswith(SAME)}
    assert numbers and numbers == {k: v for k, v in reference["metrics"].items() if k.startswith(SAME)}
    assert (
        "continued sweep: skipped (completed before): job 0; resumed from last.ckpt: job 1; run fresh: job 2"
        in again.stdout
    )
    assert f"sweep: 3 completed, 0 diverged, 0 failed in {sweep}" in again.stdout


def _as_sweep_job(monkeypatch, overrides: list[str]) -> None:
    import ablate.runtime.job as job

    monkeypatch.setattr(job, "hydra_overrides", lambda: (overrides, True))


def test_a_failed_job_runs_again_a_completed_one_is_skipped_and_another_job_is_refused(make_cfg, monkeypatch, capsys):
    cfg = make_cfg("model=mlp", "seed=1")
    folder = Path(cfg.paths.output_dir)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_text("the failed attempt's")
    failed = {"status": "failed", "error": "boom", "overrides": ["seed=1", "model=mlp"], "metrics": {}}
    (folder / "results.json").write_text(json.dumps(failed))
    before = sweep_continue.snapshot(folder.parent)
    _as_sweep_job(monkeypatch, ["model=mlp", "seed=1"])  # the same job, its overrides in another order

    value = main(cfg)
    assert read_results(folder)["status"] == "completed" and value is not None
    assert json.loads((folder / "earlier-1" / "results.failed.json").read_text())["error"] == "boom"
    assert (folder / "earlier-1" / "checkpoints" / "last.ckpt").read_text() == "the failed attempt's"
    assert "failed before, running it again" in capsys.readouterr().out
    assert sweep_continue.kinds(before, folder.parent)["rerun"] == [folder.name]

    done = (folder / "results.json").read_bytes()
    assert main(cfg) == value  # completed before: skipped, with the recorded objective
    assert (folder / "results.json").read_bytes() == done
    assert "skipped: completed before" in capsys.readouterr().out

    _as_sweep_job(monkeypatch, ["model=mlp", "seed=2"])  # another command into the same folder
    with pytest.raises(SystemExit) as exit_:
        main(make_cfg("model=mlp", "seed=2"))
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert (
        line.startswith("error: sweep folder ")
        and "holds a different sweep: job run ran with (model=mlp seed=1)" in line
    )
    assert (folder / "results.json").read_bytes() == done


def test_a_first_run_into_an_empty_folder_prints_no_continued_line(tmp_path, capsys):
    from omegaconf import OmegaConf

    from ablate.runtime.sweep_recap import SweepRecap

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "new")}, "sweeper": {}}})
    recap = SweepRecap()
    recap.on_multirun_start(config)
    (tmp_path / "new" / "0").mkdir(parents=True)
    (tmp_path / "new" / "0" / "results.json").write_text(json.dumps({"status": "completed"}))
    recap.on_multirun_end(config)
    new = tmp_path / "new"
    assert capsys.readouterr().out.splitlines() == [
        f"sweep: 1 completed, 0 diverged, 0 failed in {new}; table: python -m ablate.table {new}"
    ]


def test_an_interrupted_job_that_started_from_a_checkpoint_continues_from_its_own_last_ckpt(make_cfg):
    """A sweep that fine-tunes from ckpt_path=<other run>: its interrupted job continues from the job's own
    last.ckpt, not from the checkpoint the command names (which would start it over, in a folder it may not use)."""
    import shutil

    from ablate.runtime import resume
    from ablate.training.checkpoint_io import checksum_path

    source = make_cfg("model=mlp", subdir="source")
    main(source)
    start = Path(source.paths.output_dir) / "checkpoints" / "last.ckpt"
    job = make_cfg("model=mlp", f"ckpt_path={start}", subdir="sweep/0")
    folder = Path(job.paths.output_dir)
    (folder / "checkpoints").mkdir(parents=True)
    for path in (start, checksum_path(start)):  # the job's own last.ckpt, as its interrupted attempt left it
        shutil.copyfile(path, folder / "checkpoints" / path.name)
    (folder / "results.json").write_text(json.dumps({"status": "interrupted", "overrides": []}))

    plan = resume.plan(job, folder)
    assert plan.in_place and plan.ckpt_path == str(folder / "checkpoints" / "last.ckpt")
    (folder / "results.json").write_text(json.dumps({"status": "completed", "overrides": []}))
    assert not resume.plan(job, folder).in_place  # a finished folder: ckpt_path starts a new run, as before
