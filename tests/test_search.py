"""hparams_search=random/tpe/grid: validation objective, Optuna study in RDB storage, resume, failed trials, recap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ablate.errors import ConfigError
from ablate.sweep import recap
from ablate.sweep_job import objective
from hydra_plugins.ablate_optuna_sweeper.sweeper import _direction, _parse_space
from tests.conftest import REPO, compose_config

# Tiny trials on the bundled digits: one epoch of a small MLP, no test pass, no progress bar.
TINY = [
    "data=digits",
    "model=mlp",
    "model.width=32",
    "trainer.max_epochs=1",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
    "~callbacks.progress_bar",
    "test=false",
]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "ABLATE_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}


def _search(args: list[str], tmp_path: Path, **kwargs) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "train.py"), "-m", *TINY, *args]
    return subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300, **kwargs)


def _study(tmp_path: Path) -> optuna.Study:
    (db,) = (tmp_path / "logs" / "searches").glob("*/optuna.db")
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{db}")
    return optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{db}")


def _check_values_are_validation_metrics(study: optuna.Study) -> None:
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        (run_dir,) = trial.user_attrs["run_dirs"]
        record = json.loads((Path(run_dir) / "results.json").read_text())
        assert record["status"] == "completed"
        assert trial.value == pytest.approx(record["metrics"]["val/acc_best"])
        for key, value in trial.params.items():  # the job really ran with the trial's parameters
            node = record["config"]
            for part in key.split("."):
                node = node[part]
            assert node == pytest.approx(value)


def test_plugins_are_discovered_together() -> None:
    sweepers = {p.__name__ for p in Plugins.instance().discover(Sweeper)}
    launchers = {p.__name__ for p in Plugins.instance().discover(Launcher)}
    assert "AblateOptunaSweeper" in sweepers
    assert {"JoblibLauncher", "LocalLauncher", "SlurmLauncher"} <= launchers


@pytest.mark.parametrize("choice", ["random", "tpe", "grid"])
def test_search_configs_compose(tmp_path: Path, choice: str) -> None:
    cfg = compose_config([f"hparams_search={choice}"], tmp_path)
    assert cfg.optimized_metric == "val/acc_best"
    # hydra.* is not in a composed job config; the sweeper node is checked through the search's own file
    text = (REPO / "configs" / "hparams_search" / f"{choice}.yaml").read_text()
    assert f"sampler: {choice}" in text


def test_space_parsing() -> None:
    params = {"optimizer.lr": "tag(log, interval(1e-4, 1e-1))", "reg.dropout": "interval(0.0, 0.5)"}
    space, fixed = _parse_space(params, ["data=digits", "model.depth=range(1,4)", "reg.dropout=0.2"], grid=False)
    assert space["optimizer.lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["model.depth"] == IntDistribution(1, 3)
    assert "reg.dropout" not in space  # fixed on the command line
    assert fixed == ["data=digits", "reg.dropout=0.2"]
    space, _ = _parse_space({"optimizer": "choice(adam, sgd)"}, [], grid=False)
    assert space["optimizer"] == CategoricalDistribution(["adam", "sgd"])
    space, _ = _parse_space({"optimizer.lr": "choice(0.1, 0.01)"}, [], grid=True)
    assert space["optimizer.lr"] == [0.1, 0.01]
    with pytest.raises(HydraException, match="grid sampler needs discrete values"):
        _parse_space(params, [], grid=True)
    assert OverridesParser.create().parse_override("a=1").is_sweep_override() is False


def test_direction_and_objective(make_cfg) -> None:
    assert _direction("val/loss", "auto") == "minimize"
    assert _direction("val/acc_best", "auto") == "maximize"
    cfg = make_cfg()
    assert objective(cfg, {"val/acc_best": 0.9, "test/acc": 0.5}) == 0.9
    assert objective(cfg, {"val/acc_best": float("nan")}) is None  # recorded as failed, not a fake number
    with pytest.raises(ConfigError, match="not a validation metric"):
        objective(make_cfg("optimized_metric=test/acc"), {"test/acc": 0.5})


def test_recap_counts_statuses(tmp_path: Path) -> None:
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a finished process: its pid is gone
    records = [{"status": s} for s in ("completed", "completed", "diverged", "failed")]
    records += [{"status": "running", "host": socket.gethostname(), "pid": pid} for pid in (dead.pid, os.getpid())]
    for i, record in enumerate(records):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps(record))
    line = recap(tmp_path)
    assert line.startswith("sweep: 2 completed, 1 diverged, 1 failed, 1 interrupted, 1 running in ")
    assert line.endswith(f"table: python -m ablate.table {tmp_path}")


@pytest.mark.slow
def test_random_search_optimises_the_validation_metric(tmp_path: Path) -> None:
    proc = _search(["hparams_search=random", "hydra.sweeper.n_trials=2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = _study(tmp_path)
    assert study.direction.name == "MAXIMIZE"
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert set(study.trials[0].params) == {"optimizer.lr", "optimizer.weight_decay", "reg.dropout"}
    _check_values_are_validation_metrics(study)
    assert "sweep: 2 completed, 0 diverged, 0 failed" in proc.stdout
    assert "python -m ablate.table" in proc.stdout


@pytest.mark.slow
def test_grid_enumerates_and_a_diverged_trial_fails_without_stopping(tmp_path: Path) -> None:
    args = ["hparams_search=grid", "optimizer=sgd", "optimizer.lr=choice(0.003, 1e9)", "optimizer.weight_decay=0"]
    args += ["reg.dropout=0", "nan_check_every=1"]
    proc = _search(args, tmp_path)
    # The search went on, and a diverged trial is a finding of the search, not an error: exit 0 (a crashed one: 1).
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _study(tmp_path).trials
    assert sorted(t.params["optimizer.lr"] for t in trials) == [0.003, 1e9]  # the whole grid, nothing more
    by_lr = {t.params["optimizer.lr"]: t for t in trials}
    assert by_lr[0.003].state == TrialState.COMPLETE
    assert by_lr[1e9].state == TrialState.FAIL and by_lr[1e9].user_attrs["status"] == "diverged"
    assert "sweep: 1 completed, 1 diverged, 0 failed" in proc.stdout


@pytest.mark.slow
def test_killed_search_resumes_when_the_same_command_runs_again(tmp_path: Path) -> None:
    args = ["hparams_search=tpe", "hydra.sweeper.n_trials=3", "trainer.max_epochs=2"]
    cmd = [sys.executable, str(REPO / "train.py"), "-m", *TINY, *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list((tmp_path / "logs" / "searches").glob("*/1/results.json")):  # trial 1 has started
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-3000:]
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    interrupted_params = study.trials[1].params

    again = _search(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]  # the killed trial's folder stays `interrupted`, rerun here
    assert "sweep: 3 completed, 0 diverged, 0 failed, 1 interrupted" in again.stdout
    assert "1/3 trials done, 1 interrupted trial(s) queued again" in again.stdout
    study = _study(tmp_path)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[1].user_attrs["status"] == "interrupted"
    assert study.trials[2].params == interrupted_params and study.trials[2].user_attrs["retry_of"] == 1
    _check_values_are_validation_metrics(study)


class _FakeLauncher:
    """Stands in for Hydra's launcher: records each batch and returns a value per job without training."""

    def __init__(self, value_of) -> None:
        self.batches: list[list[list[str]]] = []
        self.value_of = value_of

    def launch(self, batch, initial_job_idx):
        from types import SimpleNamespace

        from hydra.core.utils import JobStatus

        self.batches.append([list(job) for job in batch])
        return [SimpleNamespace(status=JobStatus.COMPLETED, _return_value=self.value_of(job)) for job in batch]


def test_sampler_seed_names_another_study() -> None:
    """hydra.sweeper.seed=1 is a new search, not a resume of seed 0's finished study (which would run nothing)."""
    from hydra_plugins.ablate_optuna_sweeper.sweeper import AblateOptunaSweeper

    space, fixed = _parse_space({"optimizer.lr": "tag(log, interval(1e-4, 1e-1))"}, ["data=digits"], grid=False)

    def name(**params) -> str:
        return AblateOptunaSweeper(**params)._study_name(fixed, space, "random")

    assert name(seed=0, n_trials=5) == name(seed=0, n_trials=50) == name(seed=None)  # budget: same study, resumed
    assert len({name(seed=0), name(seed=1), name(seed=2)}) == 3


def test_trial_objective_is_the_mean_over_seeds_and_folds(tmp_path: Path, monkeypatch) -> None:
    from hydra import compose, initialize_config_dir

    from hydra_plugins.ablate_optuna_sweeper.sweeper import AblateOptunaSweeper
    from tests.conftest import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", ["hparams_search=random", "seed=5"], return_hydra_config=True)
    params = {**cfg.hydra.sweeper, "n_trials": 3, "n_jobs": 2, "repeats": 2, "num_folds": 3}
    params.update(searches_dir=str(tmp_path), params={"optimizer.lr": "tag(log, interval(1e-4, 1e-1))"})
    params.pop("_target_")

    def value_of(job: list[str]) -> float:  # depends on the seed and the fold, so the mean is checkable
        opts = dict(o.split("=", 1) for o in job if not o.startswith("hydra."))
        return int(opts["seed"]) + 10 * int(opts["data.fold"])

    sweeper = AblateOptunaSweeper(**params)
    sweeper.config, sweeper.launcher = cfg, _FakeLauncher(value_of)
    monkeypatch.setattr(sweeper, "validate_batch_is_legal", lambda batch: None)
    sweeper.sweep(["data=digits"])
    jobs = [job for batch in sweeper.launcher.batches for job in batch]
    assert [len(b) for b in sweeper.launcher.batches] == [12, 6]  # 2 trials x 6 jobs, then the last trial
    first = [dict(o.split("=", 1) for o in job if not o.startswith("hydra.")) for job in jobs[:6]]
    assert sorted((o["seed"], o["data.fold"]) for o in first) == [(s, f) for s in ("5", "6") for f in ("0", "1", "2")]
    assert all(o["data"] == "digits" and "optimizer.lr" in o for o in first)
    assert len({o["optimizer.lr"] for o in first}) == 1  # one trial's setting on every job
    (db,) = tmp_path.glob("*/optuna.db")
    study = optuna.load_study(study_name=db.parent.name, storage=f"sqlite:///{db}")
    # mean over seeds 5, 6 and folds 0, 1, 2 of seed + 10 * fold
    assert [t.value for t in study.trials] == [5.5 + 10.0] * 3
    assert study.trials[0].user_attrs["values"] == [5, 6, 15, 16, 25, 26]


def test_search_without_multirun_is_an_error() -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from ablate.sweep_job import check_objective
    from tests.conftest import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", ["hparams_search=random"], return_hydra_config=True)  # run mode, as without -m
    HydraConfig.instance().set_config(cfg)
    try:
        with pytest.raises(ConfigError, match="hparams_search=random runs a search of many jobs; add -m"):
            check_objective(cfg)
    finally:
        HydraConfig.instance().cfg = None  # type: ignore[assignment]


@pytest.mark.slow
def test_bad_search_settings_are_one_line_errors(tmp_path: Path) -> None:
    for bad, message in [
        ("optimized_metric=test/acc", "error: optimized_metric=test/acc is a test metric"),
        ("optimizer.lrr=tag(log,interval(1e-3,1e-2))", "error: the search's jobs do not compose"),
    ]:
        proc = _search(["hparams_search=random", bad], tmp_path)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "logs").exists()  # nothing written


def test_pruning_callback_stops_a_trial_below_the_median(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import torch

    from ablate.callbacks import OptunaPruning

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    done = study.ask()
    for epoch, value in enumerate([0.8, 0.9]):
        done.report(value, epoch)
    study.tell(done, 0.9)
    kwargs = {"n_startup_trials": 1, "n_warmup_steps": 0}

    def run_epoch(value: float) -> tuple[bool, optuna.trial.FrozenTrial]:
        trial = study.ask()
        info = json.dumps({"study": "s", "storage": storage, "trial_id": trial._trial_id, "pruner_kwargs": kwargs})
        callback = OptunaPruning(trial=info, monitor="val/acc")
        trainer = SimpleNamespace(
            callback_metrics={"val/acc": torch.tensor(value)}, sanity_checking=False, current_epoch=0, should_stop=False
        )
        callback.on_validation_epoch_end(trainer, None)
        return trainer.should_stop, study._storage.get_trial(trial._trial_id)

    stopped, frozen = run_epoch(0.5)  # below the median (0.8) of the earlier trial at epoch 0
    assert stopped and frozen.user_attrs["pruned_at_epoch"] == 0 and frozen.intermediate_values == {0: 0.5}
    stopped, frozen = run_epoch(0.85)
    assert not stopped and "pruned_at_epoch" not in frozen.user_attrs
    idle = SimpleNamespace(callback_metrics={"val/acc": torch.tensor(0.1)}, sanity_checking=False, should_stop=False)
    OptunaPruning(trial=None).on_validation_epoch_end(idle, None)  # outside a pruned search: nothing happens
    assert not idle.should_stop


@pytest.mark.parametrize(
    ("sweeper", "statuses", "code"),
    [
        ("hydra._internal.core_plugins.basic_sweeper.BasicSweeper", ["completed", "diverged"], 1),
        ("hydra_plugins.ablate_optuna_sweeper.sweeper.AblateOptunaSweeper", ["completed", "diverged"], 0),
        ("hydra_plugins.ablate_optuna_sweeper.sweeper.AblateOptunaSweeper", ["completed", "interrupted"], 0),
        ("hydra_plugins.ablate_optuna_sweeper.sweeper.AblateOptunaSweeper", ["completed", "failed"], 1),
    ],
)
def test_sweep_exit_code_counts_diverged_trials_of_a_search_as_findings(tmp_path, sweeper, statuses, code) -> None:
    from omegaconf import OmegaConf

    from ablate import sweep

    for job, status in enumerate(statuses):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "results.json").write_text(json.dumps({"status": status}))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}, "sweeper": {"_target_": sweeper}}})
    sweep.SweepExitCode().on_multirun_end(config)
    assert sweep.exit_code() == code
