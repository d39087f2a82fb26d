"""hydra/launcher=joblib and submitit_local: 2-job sweeps, threads divided, a diverging job does not stop the sweep;
logger names/groups/tags from the overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ablate.runtime.sweep_objective import _cores
from tests.conftest import FAST, run_cli


def _jobs(tmp_path: Path) -> dict[str, dict]:
    (sweep,) = (tmp_path / "logs" / "multiruns").iterdir()
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_two_job_sweep_survives_a_diverging_job(tmp_path: Path, launcher: str, monkeypatch) -> None:
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    args = ["-m", f"hydra/launcher={launcher}", *extra, *FAST, "model=mlp", "optimizer=sgd", "nan_check_every=1"]
    monkeypatch.setenv("ABLATE_ROOT", str(tmp_path))  # the sweep dir goes under tmp_path/logs
    proc = run_cli([*args, "optimizer.lr=0.01,1e9"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]  # every job ran; the exit code says one did not complete
    jobs = _jobs(tmp_path)
    assert sorted(j["status"] for j in jobs.values()) == ["completed", "diverged"]
    assert jobs["0"]["run_dir"] != jobs["1"]["run_dir"]  # one output dir per job, even when started together
    if launcher == "joblib":  # two jobs at once share the cores instead of each taking all of them
        assert {j["torch_threads"] for j in jobs.values()} == {max(1, _cores() // 2)}
    assert "sweep: 1 completed, 1 diverged, 0 failed in " in proc.stdout
    assert "python -m ablate.table" in proc.stdout


@pytest.mark.slow
def test_a_multirun_prints_one_line_per_job_and_the_recap(tmp_path: Path, monkeypatch) -> None:
    """No model summary, progress bar, Lightning INFO or launcher lines: 2 jobs -> 3 lines (was 50)."""
    monkeypatch.setenv("ABLATE_ROOT", str(tmp_path))
    loud = [o for o in FAST if "progress_bar" not in o and "model_summary" not in o]  # FAST turns them off
    proc = run_cli(["-m", *loud, "model=mlp", "seed=1,2"], tmp_path, check=True)
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) == 3, proc.stdout + proc.stderr
    assert lines[0].startswith("job 0 (") and "seed=1): test/acc=" in lines[0] and "fit=" in lines[0]
    assert lines[1].startswith("job 1 (") and lines[2].startswith("sweep: 2 completed")


def test_wandb_and_tensorboard_runs_are_named_by_overrides(tmp_path: Path, monkeypatch) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from ablate.runtime.loggers import tensorboard_logger, wandb_logger
    from tests.conftest import CONFIG_DIR

    monkeypatch.setenv("WANDB_MODE", "disabled")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["optimizer=adam", "seed=1", "tags=[paper]", f"hydra.sweep.dir={tmp_path}/sweep42"],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.runtime.output_dir = str(tmp_path / "0")
    HydraConfig.instance().set_config(cfg)
    import wandb as wandb_module

    finished: list[bool] = []  # the previous job's W&B run is finished, not reused by the next job (same process)
    monkeypatch.setattr(wandb_module, "run", object())
    monkeypatch.setattr(wandb_module, "finish", lambda: finished.append(True))
    try:
        wandb = wandb_logger(project="ablate", save_dir=str(tmp_path), tags=["paper"])
        tb = tensorboard_logger(save_dir=str(tmp_path), name="tensorboard")
    finally:
        HydraConfig.instance().cfg = None  # type: ignore[assignment]
    assert wandb._wandb_init["name"] == "optimizer=adam,seed=1"
    assert wandb._wandb_init["group"] == "sweep42"
    assert wandb._wandb_init["tags"] == ["paper", "optimizer=adam", "seed=1"]
    # Not Lightning's anonymous=None, which W&B warns about on every run; a multirun job's W&B banner is off.
    assert "anonymous" not in wandb._wandb_init and wandb._wandb_init["settings"].silent and finished == [True]
    assert tb.version == "optimizer=adam,seed=1"
    assert Path(tb.log_dir) == tmp_path / "tensorboard" / "optimizer=adam,seed=1"
    # Outside Hydra nothing is derived
    assert tensorboard_logger(save_dir=str(tmp_path), name="tb").version == ""


def test_progress_bar_shows_mean_speed_and_running_loss(monkeypatch) -> None:
    """The bar's it/s is batches / elapsed time, and the running training loss is read from the device stats."""
    from types import SimpleNamespace

    import torch
    from lightning.pytorch.callbacks import RichProgressBar

    from ablate.training.callbacks import ThrottledRichProgressBar, _MeanSpeedColumn
    from ablate.training.step_metrics import ClassificationStats

    column = _MeanSpeedColumn(style="")
    assert column.render(SimpleNamespace(completed=50, finished_time=2.0, elapsed=9.0)).plain == "25.00it/s"
    assert column.render(SimpleNamespace(completed=10, finished_time=None, elapsed=4.0)).plain == "2.50it/s"
    # W&B's version (a random run id, Lightning's v_num) is left out: it broke the bar's metrics column.
    monkeypatch.setattr(RichProgressBar, "get_metrics", lambda self, trainer, module: {"val/acc": 0.5, "v_num": "p8qa"})
    stats = ClassificationStats()
    stats.accumulate(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]), torch.tensor(0.75))
    bar, module = ThrottledRichProgressBar(), SimpleNamespace(train_stats=stats)
    training = SimpleNamespace(training=True, sanity_checking=False)
    assert bar.get_metrics(training, module) == {"loss": "0.75", "val/acc": 0.5}
    stats.reset()  # a new epoch before its first redraw keeps showing the last value
    validating = SimpleNamespace(training=False, sanity_checking=False)
    assert bar.get_metrics(validating, module)["loss"] == "0.75"


def test_slurm_launcher_config_composes() -> None:
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 240)


def test_model_summary_drops_the_all_zero_flops_column(capsys) -> None:
    from ablate.training.callbacks import RichModelSummary

    data = [(" ", ["0"]), ("Name", ["model"]), ("Type", ["MLP"]), ("Params", ["85.0 K"]), ("Mode", ["train"])]
    RichModelSummary.summarize([*data, ("FLOPs", ["0"])], 85_000, 85_000, 0.34, {"train": 1, "eval": 0}, 0)
    out = capsys.readouterr().out
    assert "MLP" in out and "85.0 K" in out and "FLOPs" not in out
    RichModelSummary.summarize([*data, ("FLOPs", ["1.2 M"])], 85_000, 85_000, 0.34, {"train": 1, "eval": 0}, 1_200_000)
    assert "FLOPs" in capsys.readouterr().out  # counted FLOPs are shown as Lightning shows them
    assert RichModelSummary(enabled=False).enabled is False


def test_help_mentions_search_table_and_evaluate(tmp_path: Path) -> None:
    proc = run_cli(["--help"], tmp_path, check=True)
    for text in ("hparams_search: grid, random, tpe", "python -m ablate.table", "python evaluate.py runs="):
        assert text in proc.stdout
