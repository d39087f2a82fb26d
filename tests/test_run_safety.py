"""Runs a scheduler and a reviewer can trust, in process: checkpoints, resume rules, run folders, statuses."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from ablate.runtime.job import main, train
from ablate.runtime.results import STATUSES, effective_status
from ablate.runtime.rundir import run_dir, stamp
from ablate.training.checkpoint_io import AtomicCheckpointIO, CheckpointError, checksum_path, digest, load_verified
from tests.conftest import compose_config, read_results


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


# -- checkpoints ---------------------------------------------------------------------------------------------------
def test_checkpoint_writes_are_atomic_checksummed_and_follow_the_umask(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    old = os.umask(0o027)
    try:
        io.save_checkpoint({"w": torch.ones(3)}, path)
        io.save_checkpoint({"w": torch.zeros(3)}, path)  # a rewrite: the checksum follows the new bytes
    finally:
        os.umask(old)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]  # no temp files
    assert (path.stat().st_mode & 0o777) == 0o640 == (checksum_path(path).stat().st_mode & 0o777)
    assert checksum_path(path).read_text() == f"{digest(path)}  last.ckpt\n"  # sha256sum's format
    assert torch.equal(io.load_checkpoint(path)["w"], torch.zeros(3))
    io.remove_checkpoint(path)
    assert list(path.parent.iterdir()) == []


def test_a_kill_between_rename_and_checksum_still_verifies(tmp_path):
    # Mid-save, the .sha256 lists the old and the new digest: either file on disk verifies.
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, path)
    old = digest(path)
    io.save_checkpoint({"w": torch.zeros(3)}, tmp_path / "new.ckpt")
    new = digest(tmp_path / "new.ckpt")
    checksum_path(path).write_text(f"{new}  last.ckpt\n{old}  last.ckpt\n")
    load_verified(path)
    os.replace(tmp_path / "new.ckpt", path)
    load_verified(path)


def test_a_corrupted_checkpoint_is_a_one_line_error_on_resume_and_on_load(make_cfg, capsys):
    cfg = make_cfg("model=mlp", "trainer.max_epochs=2", subdir="src")
    summary = train(cfg)
    last = Path(summary["checkpoint_last"])
    data = bytearray(last.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = os.urandom(4096)
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is corrupted"):
        AtomicCheckpointIO().load_checkpoint(last)  # what Lightning calls for resume and test-from-best
    resumed = make_cfg("model=mlp", "trainer.max_epochs=2", f"ckpt_path={last}", subdir="resumed")
    with pytest.raises(SystemExit) as exit_info:
        main(resumed)
    assert exit_info.value.code == 2
    (line,) = _error_lines(capsys)
    assert f"checkpoint {last} is corrupted" in line


def test_last_ckpt_holds_the_final_epoch_when_the_best_was_earlier(make_cfg):
    # mode=min on val/acc: the (worst-accuracy) first epoch stays "best"; last.ckpt must still follow every epoch.
    cfg = make_cfg("model=mlp", "trainer.max_epochs=3", "callbacks.model_checkpoint.mode=min")
    summary = train(cfg)
    best = torch.load(summary["checkpoint_best"], weights_only=True)
    last = torch.load(summary["checkpoint_last"], weights_only=True)
    assert best["epoch"] == 0
    assert last["epoch"] == 2 and last["global_step"] == summary["global_step"]


# -- resume rules --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("optimizer.lr=0.5", "was trained with optimizer.lr=0.003, not 0.5"),
        ("optimizer=sgd", "was trained with optimizer._target_=torch.optim.AdamW"),
        ("seed=7", "was trained with seed=0, not 7"),
        ("model.width=48", "was trained with model.width"),
        ("data.val_size=32", "was trained with data.val_size=64, not 32"),
        ("trainer.max_epochs=3", "schedule ablate.optim.schedulers.onecycle fixed its length"),
    ],
)
def test_a_changed_setting_on_resume_is_refused_in_one_line(finished_run, make_cfg, change, message, capsys):
    source, args = finished_run
    before = _tree(source)
    cfg = make_cfg(*args, change, f"ckpt_path={source / 'checkpoints' / 'last.ckpt'}", subdir="again")
    with pytest.raises(SystemExit) as exit_info:
        main(cfg)
    assert exit_info.value.code == 2
    (line,) = _error_lines(capsys)
    assert message in line
    assert _tree(source) == before


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, list[str]]:
    args = ["model=mlp", "model.width=32", "trainer.max_epochs=2"]
    folder = tmp_path_factory.mktemp("finished") / "run"
    main(compose_config(args, folder))
    return folder, args


def test_extending_a_finished_run_makes_a_new_run_and_leaves_the_old_one_untouched(make_cfg, capsys):
    args = ["model=mlp", "scheduler=step", "scheduler.fn.step_size=1"]
    first = make_cfg(*args, "trainer.max_epochs=2", subdir="finished")
    main(first)
    source = Path(first.paths.output_dir)
    before = _tree(source)
    last = source / "checkpoints" / "last.ckpt"

    # Writing into the finished run's folder is refused; nothing there changes.
    with pytest.raises(SystemExit) as exit_info:
        main(make_cfg(*args, "trainer.max_epochs=3", f"ckpt_path={last}", subdir="finished"))
    assert exit_info.value.code == 2
    assert "already holds another run's results.json" in _error_lines(capsys)[0]

    extended = make_cfg(*args, "trainer.max_epochs=3", f"ckpt_path={last}", subdir="extended")
    main(extended)
    results = read_results(Path(extended.paths.output_dir))
    assert results["status"] == "completed" and results["epochs"] == 3
    assert results["resumed_from"] == str(last.resolve())
    assert not any(o.startswith("ckpt_path") for o in results["overrides"])
    assert results["config"]["trainer"]["max_epochs"] == 3  # what actually ran
    for key in ("checkpoint_best", "checkpoint_last"):
        assert Path(results[key]).parent == Path(extended.paths.output_dir) / "checkpoints"
    assert torch.load(results["checkpoint_last"], weights_only=True)["epoch"] == 2
    assert _tree(source) == before  # byte-identical after a refused attempt and an extension


def test_a_checkpoint_without_ablate_config_is_a_one_line_error(make_cfg, tmp_path, capsys):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(SystemExit) as exit_info:
        main(make_cfg(f"ckpt_path={foreign}"))
    assert exit_info.value.code == 2
    assert "holds no ablate_config" in _error_lines(capsys)[0]


# -- interruption --------------------------------------------------------------------------------------------------
class _SignalAt(L.Callback):
    def __init__(self, signum: int, batch: int) -> None:
        self.signum, self.batch = signum, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_run_interrupted_with_the_last_step_saved(make_cfg, monkeypatch, signum, code, capsys):
    import ablate.runtime.job as run_module

    original = run_module.train
    monkeypatch.setattr(
        run_module, "train", lambda cfg, record, **kw: original(cfg, record, [_SignalAt(signum, 2)], **kw)
    )
    cfg = make_cfg("model=mlp", "trainer.max_epochs=3")
    previous = signal.getsignal(signum)
    with pytest.raises(SystemExit) as exit_info:
        main(cfg)
    assert exit_info.value.code == code
    assert signal.getsignal(signum) is previous  # handlers restored after a single run
    results = read_results(Path(cfg.paths.output_dir))
    assert results["status"] == "interrupted" and "interrupted" in STATUSES
    assert signal.Signals(signum).name in results["error"] and "ckpt_path=" in results["error"]
    last = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    # The state after the last step: epoch 0's 8 batches, then batches 0..2 of epoch 1 (tests/test_midepoch_resume.py)
    assert last["epoch"] == 1 and last["global_step"] == 8 + 3 and "ablate_mid_epoch" in last
    assert "status: interrupted" in capsys.readouterr().err


def test_an_unexpected_error_in_a_sweep_job_is_recorded_and_the_sweep_goes_on(make_cfg, monkeypatch, capsys):
    import ablate.runtime.job as run_module

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(run_module, "hydra_overrides", lambda: (["seed=1"], True))
    monkeypatch.setattr(run_module, "train", broken)
    cfg = make_cfg("model=mlp")
    assert main(cfg) is None
    results = read_results(Path(cfg.paths.output_dir))
    assert results["status"] == "failed" and results["error"] == "RuntimeError: boom"
    assert "error: job failed with RuntimeError: boom" in capsys.readouterr().err


def test_sweep_exit_code_is_non_zero_when_a_job_did_not_complete(tmp_path, capsys):
    from omegaconf import OmegaConf

    import ablate.runtime.sweep_recap as sweep

    for job, status in (("0", "completed"), ("1", "diverged")):
        (tmp_path / job).mkdir()
        (tmp_path / job / "results.json").write_text(json.dumps({"status": status}))
    callback = sweep.SweepExitCode()
    callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert sweep.exit_code() == 1
    assert "1 of 2 sweep jobs did not complete (job 1 diverged)" in capsys.readouterr().err
    (tmp_path / "1" / "results.json").write_text(json.dumps({"status": "completed"}))
    callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert sweep.exit_code() == 0


# -- statuses and folders ------------------------------------------------------------------------------------------
def test_effective_status_reports_dead_and_silent_runs_as_interrupted():
    now = time.time()
    beat = lambda age: time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now - age))
    here = socket.gethostname()
    dead_pid = 2**22 + 12345  # above the default pid_max
    assert effective_status({"status": "running", "host": here, "pid": os.getpid(), "heartbeat_at": beat(5)}) == (
        "running"
    )
    assert effective_status({"status": "running", "host": here, "pid": dead_pid, "heartbeat_at": beat(5)}) == (
        "interrupted"
    )
    assert effective_status({"status": "running", "host": "elsewhere", "pid": 1, "heartbeat_at": beat(5)}) == "running"
    assert effective_status({"status": "running", "host": "elsewhere", "pid": 1, "heartbeat_at": beat(3600)}) == (
        "interrupted"
    )
    assert effective_status({"status": "completed", "host": here, "pid": dead_pid}) == "completed"


def test_run_folders_are_unique_and_an_interrupted_checkpoint_picks_its_own_folder(tmp_path):
    assert len({stamp() for _ in range(200)}) == 200
    run = tmp_path / "runs" / "r1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    record = {"status": "running", "host": socket.gethostname(), "pid": 2**22 + 12345}
    (run / "results.json").write_text(json.dumps(record))
    assert run_dir(str(tmp_path / "runs"), str(run / "checkpoints" / "last.ckpt")) == str(run)
    (run / "results.json").write_text(json.dumps({**record, "status": "completed"}))
    fresh = run_dir(str(tmp_path / "runs"), str(run / "checkpoints" / "last.ckpt"))
    assert Path(fresh).parent == tmp_path / "runs" and fresh != str(run)


def test_a_file_where_a_folder_belongs_is_a_one_line_error(make_cfg, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(make_cfg("data=mnist", f"data.data_dir={blocker / 'mnist'}", "data.download=false"))
    assert exit_info.value.code == 2
    assert "is a file, not a folder" in _error_lines(capsys)[0]
    with pytest.raises(SystemExit) as exit_info:
        main(make_cfg(subdir="blocker/run"))
    assert exit_info.value.code == 2
    assert "is a file, not a folder" in _error_lines(capsys)[0]


def test_a_missing_data_dir_is_not_created_without_download(make_cfg, tmp_path):
    missing = tmp_path / "no" / "data"
    with pytest.raises(SystemExit):
        main(make_cfg("data=mnist", f"data.data_dir={missing}", "data.download=false"))
    assert not (tmp_path / "no").exists()


def test_a_checkpoint_from_before_the_regrouping_is_not_a_changed_setting() -> None:
    """Configs name classes by dotted path; those that moved in issue 17 (ablate.callbacks -> ablate.training.callbacks,
    ...) still resume: the old path in a checkpoint's config is read as the new one."""
    from ablate.errors import ConfigError
    from ablate.runtime.resume import check_unchanged

    def config(target: str, monitor: str) -> dict:
        return {"callbacks": {"model_checkpoint": {"_target_": target, "monitor": monitor}}}

    saved = config("ablate.callbacks.ModelCheckpoint", "val/acc")
    assert check_unchanged(saved, config("ablate.training.callbacks.ModelCheckpoint", "val/acc"), "last.ckpt") == {}
    with pytest.raises(ConfigError, match=r"monitor=val/acc, not val/loss"):
        check_unchanged(saved, config("ablate.training.callbacks.ModelCheckpoint", "val/loss"), "last.ckpt")
