"""hparams_search=random/tpe/grid: validation objective, Optuna study in RDB storage, resume, failed trials, recap."""

from __future__ import annotations

import json
import os
import shlex
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
from ablate.runtime.sweep_objective import objective
from ablate.runtime.sweep_recap import recap
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
    with pytest.raises(ConfigError, match="grid sampler needs discrete values"):  # a rule of the rule book
        _parse_space(params, [], grid=True)
    assert OverridesParser.create().parse_override("a=1").is_sweep_override() is False


def test_direction_and_objective(make_cfg) -> None:
    assert _direction("val/loss", "auto") == "minimize"
    assert _direction("val/acc_best", "auto") == "maximize"
    # From the metric registry, not the name: these were all "maximize" (no "loss" in the name).
    for metric in ("val/nll_ema", "val/ece", "val/error", "val/nll_snapshot_ens", "val/loss_best"):
        assert _direction(metric, "auto") == "minimize", metric
    assert _direction("val/acc_ema", "auto") == "maximize"
    assert _direction("val/nll", "maximize") == "maximize"  # an explicit direction still overrides
    with pytest.raises(HydraException, match="unknown metric 'val/f1'"):
        _direction("val/f1", "auto")
    with pytest.raises(ConfigError, match="unknown metric"):
        objective(make_cfg("optimized_metric=val/f1"), {"val/f1": 0.5})
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
        from hydra.core.utils import JobReturn, JobStatus

        self.batches.append([list(job) for job in batch])
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=self.value_of(job)) for job in batch]


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

    from ablate.runtime.sweep_objective import check_objective
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
        ("hydra.sweeper.n_trials=1.5", "error: hydra.sweeper.n_trials must be an integer >= 1"),  # was a traceback
        ("optimized_metric=val/nll", "error: optimized_metric=val/nll is not written by this recipe; it writes"),
        ("optimizer.lrr=tag(log,interval(1e-3,1e-2))", "error: the search's jobs do not compose"),
    ]:
        proc = _search(["hparams_search=random", bad], tmp_path)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "logs").exists()  # nothing written


def test_pruner_watches_the_objective(tmp_path: Path) -> None:
    from tests.conftest import compose_config

    cfg = compose_config(["hparams_search=random", "optimized_metric=val/loss"], tmp_path)
    assert cfg.callbacks.optuna_pruning.monitor == "val/loss"  # was val/acc whatever the objective


def test_pruning_a_minimized_objective_stops_the_higher_curve(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import torch

    from ablate.training.callbacks import OptunaPruning

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction=_direction("val/loss", "auto"))
    done = study.ask()
    done.report(0.5, 0)
    study.tell(done, 0.5)
    kwargs = {"n_startup_trials": 1, "n_warmup_steps": 0}
    for loss, pruned in ((0.9, True), (0.3, False)):
        trial = study.ask()
        info = json.dumps({"study": "s", "storage": storage, "trial_id": trial._trial_id, "pruner_kwargs": kwargs})
        trainer = SimpleNamespace(
            callback_metrics={"val/loss": torch.tensor(loss)}, sanity_checking=False, current_epoch=0, should_stop=False
        )
        OptunaPruning(trial=info, monitor="val/loss").on_validation_epoch_end(trainer, None)
        assert trainer.should_stop is pruned


def _fake_sweeper(tmp_path: Path, overrides: list[str], monkeypatch, value_of=lambda job: 0.5, **params):
    """An AblateOptunaSweeper over the composed config, with a launcher that writes completed results.json."""

    from hydra import compose, initialize_config_dir
    from hydra.core.utils import JobReturn, JobStatus

    from hydra_plugins.ablate_optuna_sweeper.sweeper import AblateOptunaSweeper
    from tests.conftest import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", ["hparams_search=random", *overrides], return_hydra_config=True)
    merged = {**cfg.hydra.sweeper, "searches_dir": str(tmp_path), "n_trials": 2, **params}
    merged.pop("_target_")
    sweeper = AblateOptunaSweeper(**merged)
    environments: list[str | None] = []

    class Launcher:
        batches: list = []

        def launch(self, batch, initial_job_idx):
            environments.append(os.environ.get("ABLATE_SEARCH_COMMAND"))
            returns = []
            for job in batch:
                opts = dict(o.split("=", 1) for o in job)
                run_dir = Path(opts["hydra.sweep.dir"].strip("'")) / opts["hydra.sweep.subdir"]
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "results.json").write_text(json.dumps({"status": "completed"}))
                returns.append(JobReturn(status=JobStatus.COMPLETED, _return_value=value_of(opts)))
            self.batches.append(batch)
            return returns

    sweeper.config, sweeper.launcher = cfg, Launcher()
    monkeypatch.setattr(sweeper, "validate_batch_is_legal", lambda batch: None)
    monkeypatch.delenv("ABLATE_SEARCH_COMMAND", raising=False)
    sweeper.environments = environments
    return sweeper


def test_search_minimizes_nll_and_writes_best_yaml(tmp_path: Path, monkeypatch) -> None:
    """The issue's search: optimized_metric=val/nll_ema under ensemble=ema is minimised, best.yaml reruns the best."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_config

    lr_of = lambda opts: float(opts["optimizer.lr"])
    overrides = ["data=digits", "model=mlp", "ensemble=ema", "optimized_metric=val/nll_ema"]
    sweeper = _fake_sweeper(tmp_path, overrides, monkeypatch, value_of=lr_of, n_trials=3)
    typed = ["train.py", "-m", "hparams_search=random", *overrides]  # what the user typed (not pytest's argv)
    monkeypatch.setattr(sys, "argv", typed)
    sweeper.sweep(overrides)
    (db,) = tmp_path.glob("*/optuna.db")
    study = optuna.load_study(study_name=db.parent.name, storage=f"sqlite:///{db}")
    assert study.direction.name == "MINIMIZE"
    best = OmegaConf.load(db.parent / "best.yaml")
    assert best.value == min(t.value for t in study.trials) and best.metric == "val/nll_ema"
    assert best.trial == study.best_trial.number and dict(best.params) == study.best_trial.params
    # The command reruns the best setting as one plain run (no hparams_search, no -m), with the trial's values.
    args = best.command.split()
    assert args[:2] == ["python", "train.py"] and not any(a.startswith("hparams_search") for a in args)
    cfg = compose_config(args[2:], tmp_path / "rerun", fast=False)
    assert cfg.optimizer.lr == best.params["optimizer.lr"] and cfg.ensemble.name == "ema"
    # An interrupted trial's resume advice is the search's own command (with -m).
    assert sweeper.environments and all(c == shlex.join(["python", *typed]) for c in sweeper.environments)


def test_unknown_objective_is_refused_before_the_first_trial(tmp_path: Path, monkeypatch, capsys) -> None:
    for overrides, listed in [
        (["optimized_metric=val/nll"], "it writes val/loss, val/acc, val/acc_best, val/loss_best"),
        (["optimized_metric=val/nll_swa", "ensemble=ema"], "val/nll_ema"),
    ]:
        sweeper = _fake_sweeper(tmp_path, overrides, monkeypatch)
        with pytest.raises(SystemExit) as exit_info:
            sweeper.sweep(overrides)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "is not written by this recipe" in err and listed in err
        assert err.count("\n") == 1 and not sweeper.launcher.batches
    assert not list(tmp_path.iterdir())  # nothing written


def test_recap_agrees_with_the_study_and_no_completed_trial_fails(tmp_path: Path, monkeypatch) -> None:
    """Jobs that complete without the objective: Optuna marks the trials FAIL, and so does the recap; exit 1."""
    from omegaconf import OmegaConf

    from ablate.runtime import sweep_recap as sweep

    sweeper = _fake_sweeper(tmp_path, [], monkeypatch, value_of=lambda opts: None)
    sweeper.sweep([])
    (sweep_dir,) = (p for p in tmp_path.iterdir() if p.is_dir())
    assert sweep.recap(sweep_dir).startswith("sweep: 0 completed, 0 diverged, 2 failed trials in ")  # was 2 completed
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}, "sweeper": {"_target_": _OPTUNA}}})
    sweep.SweepExitCode().on_multirun_end(config)
    assert sweep.exit_code() == 1
    sweep.record_search_trials(sweep_dir, {"0": "diverged", "1": "pruned"})  # nothing completed: found nothing
    sweep.SweepExitCode().on_multirun_end(config)
    assert sweep.exit_code() == 1


_OPTUNA = "hydra_plugins.ablate_optuna_sweeper.sweeper.AblateOptunaSweeper"


@pytest.mark.parametrize(
    ("overrides", "params", "message"),
    [
        ([], {"n_trials": 1.5}, "hydra.sweeper.n_trials must be an integer >= 1"),
        ([], {"n_trials": 0}, "hydra.sweeper.n_trials must be an integer >= 1"),
        ([], {"n_trials": -3}, "hydra.sweeper.n_trials must be an integer >= 1"),
        ([], {"repeats": 0}, "search.repeats must be an integer >= 1"),
        ([], {"repeats": 1.5}, "search.repeats must be an integer >= 1"),
        (["optimizer.lr=interval(0.1,0.01)"], {}, "optimizer.lr: interval(0.1, 0.01) needs low <= high"),
        (["optimizer.lr=tag(log,interval(0,0.1))"], {}, "optimizer.lr: a log range needs low > 0"),
        ([], {"sampler_kwargs": {"n_startup": 3}, "sampler": "tpe"}, "the tpe sampler takes no n_startup; it takes"),
        ([], {"storage": "notaurl"}, "hydra.sweeper.storage=notaurl cannot be opened"),
        ([], {"storage": "sqlite:////nonexistent/dir/x.db"}, "cannot be opened (OperationalError"),
    ],
)
def test_bad_search_values_are_one_line_errors(tmp_path, monkeypatch, capsys, overrides, params, message) -> None:
    sweeper = _fake_sweeper(tmp_path, [], monkeypatch, **params)
    with pytest.raises(SystemExit) as exit_info:
        sweeper.sweep(overrides)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err
    assert not sweeper.launcher.batches


def test_resumed_study_with_another_space_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    sweeper = _fake_sweeper(tmp_path, [], monkeypatch, study_name="mine", n_trials=1)
    sweeper.sweep([])
    again = _fake_sweeper(tmp_path, [], monkeypatch, study_name="mine", n_trials=2)
    with pytest.raises(SystemExit) as exit_info:
        again.sweep(["optimizer.lr=tag(log,interval(1e-3,1e-2))"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "was run with another search space (optimizer.lr: was" in err
    assert "start a new study" in err and not again.launcher.batches


def test_pruning_a_metric_scored_only_after_training_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    overrides = ["ensemble=ema", "optimized_metric=val/nll_ema"]
    sweeper = _fake_sweeper(tmp_path, overrides, monkeypatch, pruner="median")
    with pytest.raises(SystemExit):
        sweeper.sweep(overrides)
    assert "is computed once after training" in capsys.readouterr().err


def test_search_trial_resume_advice_is_the_search_command(monkeypatch) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from ablate.runtime.sweep_recap import search_resume_advice
    from tests.conftest import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", ["hparams_search=random"], return_hydra_config=True)
    monkeypatch.setenv("ABLATE_SEARCH_COMMAND", "python train.py -m hparams_search=random data=digits")
    HydraConfig.instance().set_config(cfg)
    try:
        assert search_resume_advice().startswith("python train.py -m hparams_search=random data=digits")
    finally:
        HydraConfig.instance().cfg = None  # type: ignore[assignment]
    assert search_resume_advice() is None  # outside a search


def test_pruning_callback_stops_a_trial_below_the_median(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import torch

    from ablate.training.callbacks import OptunaPruning

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

    from ablate.runtime import sweep_recap as sweep

    for job, status in enumerate(statuses):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "results.json").write_text(json.dumps({"status": status}))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}, "sweeper": {"_target_": sweeper}}})
    sweep.SweepExitCode().on_multirun_end(config)
    assert sweep.exit_code() == code


def test_val_loss_best_is_recorded_beside_val_acc_best(make_cfg) -> None:
    """A symmetric "best epoch" objective: the lowest validation loss over the epochs, logged and in the summary."""
    import csv

    from ablate.runtime.job import train

    cfg = make_cfg("model=mlp", "model.width=16", "trainer.max_epochs=2", "test=false")
    metrics = train(cfg)["metrics"]
    rows = list(csv.DictReader((Path(cfg.paths.output_dir) / "history.csv").open()))
    losses = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(losses) == 2
    assert metrics["val/loss_best"] == pytest.approx(min(losses))
    assert metrics["val/acc_best"] == pytest.approx(max(float(r["val/acc"]) for r in rows if r.get("val/acc")))
