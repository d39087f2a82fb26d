"""A small Hydra sweeper over current Optuna: ask a batch of trials, launch them as Hydra jobs, tell the results.

Why not hydra-optuna-sweeper: its last release pins ``optuna<3``. This sweeper keeps Optuna's own pieces (samplers,
RDB storage, ask/tell) and adds only the Hydra glue:

- the search space uses Hydra's sweep syntax (``tag(log, interval(1e-4, 1e-1))``, ``choice(a, b)``, ``range(1, 5)``),
  from ``hydra.sweeper.params`` or from sweep overrides on the command line (which replace the config's entry);
- the study lives in an RDB storage (SQLite in the sweep dir unless ``storage`` is a URL) under a name derived from
  the command, so starting the same command again resumes the study; trials left RUNNING by a killed sweeper on this
  machine are marked FAIL and their parameters tried again first;
- a trial is ``repeats`` x ``num_folds`` jobs (seeds, CV folds) and its objective is their mean; a job that fails or
  diverges makes the trial FAIL (Optuna's samplers ignore it) and the search goes on.

Optuna is imported only when a sweep starts: Hydra imports every plugin on every command, ``--help`` included.
The parts live beside this file: ``space`` (sweep syntax -> distributions), ``study`` (sampler, storage, resume),
``best`` (a trial's outcome, best.yaml); the rules on the settings are the rule book's (``ablate.config.rules.search``).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, read_write

from ablate.config.rules.search import check_objective, check_pruner, check_settings, validate_search
from ablate.errors import ConfigError
from ablate.runtime.sweep_recap import SEARCH_COMMAND_ENV
from hydra_plugins.ablate_optuna_sweeper import optuna_compat
from hydra_plugins.ablate_optuna_sweeper import study as studies
from hydra_plugins.ablate_optuna_sweeper.best import report_best, search_command, tell
from hydra_plugins.ablate_optuna_sweeper.space import (
    SearchError,
    _direction,
    _format,
    _parse_space,
    recipe_metrics,
    sample_job,
)

if TYPE_CHECKING:
    import optuna

SAMPLERS = ("random", "tpe", "grid")


class Plan(NamedTuple):
    """A checked search, before its study is opened: what to try, how often, and on what. (A NamedTuple: Hydra's
    plugin scan imports this module outside ``sys.modules``, where dataclasses cannot resolve annotations.)"""

    sampler: str
    space: dict[str, Any]
    fixed: list[str]
    n_trials: int
    n_jobs: int
    repeats: int
    folds: list[int | None]
    metric: str
    direction: str
    pruner: str | None
    pruner_kwargs: dict[str, Any]

    @property
    def grid(self) -> bool:
        return self.sampler == "grid"


class AblateOptunaSweeper(Sweeper):
    def __init__(self, **params: Any) -> None:
        self.params = params
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return self._sweep(arguments)
        except SearchError as err:  # the project's convention: one line, exit code 2, nothing written
            print(str(err), file=sys.stderr)
            sys.exit(2)
        except ConfigError as err:  # a rule of the rule book (ablate.config.rules.search)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)

    def _sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        plan = self._plan(arguments)
        name = self._study_name(plan.fixed, plan.space, plan.sampler)
        sweep_dir = self._sweep_dir(name)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = self.params.get("storage") or f"sqlite:///{sweep_dir / 'optuna.db'}"
        with read_write(self.config.hydra.sweep):  # the launcher, the recap callback and the jobs use this dir
            self.config.hydra.sweep.dir = str(sweep_dir)
        study, distributions = self._open(plan, name, storage, sweep_dir)
        base_seed = int(self.config.get("seed", 0) or 0)
        results = self._run_trials(plan, study, distributions, (name, storage, sweep_dir), base_seed)
        jobs_per_trial = plan.repeats * len(plan.folds)
        report_best(study, plan.metric, sweep_dir, plan.fixed, base_seed, jobs_per_trial)
        return results

    def _plan(self, arguments: list[str]) -> Plan:
        """Every rule of the search, before anything is composed or written (the rule book's, and one composed job)."""
        assert self.config is not None
        p = validate_search(self.params)  # n_trials, n_jobs, repeats, ...
        sampler = str(p.get("sampler", "tpe"))
        space, fixed = _parse_space(dict(p.get("params") or {}), arguments, sampler == "grid")
        check_settings(p, space)
        n_trials = p.get("n_trials")
        if n_trials is None:  # the grid sampler (check_settings): the grid's size
            n_trials = math.prod(len(v) for v in space.values())
        num_folds = int(p.get("num_folds", 0) or 0)
        folds: list[int | None] = list(range(num_folds)) if num_folds >= 2 else [None]
        metric = str(p.get("metric", "val/acc_best"))
        direction = _direction(metric, str(p.get("direction", "auto")))
        check_objective(metric, *recipe_metrics(self.config, space), pruned=bool(p.get("pruner")))
        check_pruner(p, int(p.get("repeats", 1)) * len(folds))
        self._check_composes(fixed, space)
        return Plan(sampler, space, fixed, n_trials, int(p.get("n_jobs", 1)), int(p.get("repeats", 1)), folds,
                    metric, direction, p.get("pruner"), dict(p.get("pruner_kwargs") or {}))  # fmt: skip

    def _open(self, plan: Plan, name: str, storage: str, sweep_dir: Path) -> tuple[optuna.Study, dict[str, Any]]:
        """The study, created or resumed (same direction, same space), with interrupted trials queued again."""
        import optuna

        distributions = {k: v for k, v in plan.space.items() if not plan.grid}
        if plan.grid:
            distributions = {k: optuna.distributions.CategoricalDistribution(v) for k, v in plan.space.items()}
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = studies.make_sampler(self.params, plan.sampler, plan.space, 0)
        pruner = studies._build_pruner(plan.pruner_kwargs) if plan.pruner else None
        study = studies._open_study(name, storage, sampler, plan.direction, pruner)
        if study.trials:
            study.sampler = studies.make_sampler(self.params, plan.sampler, plan.space, len(study.trials))
        if study.direction.name.lower() != plan.direction:
            raise SearchError(f"error: study {name} in {storage} was created to {study.direction.name.lower()}")
        studies._check_same_space(study, distributions, storage)
        study.set_user_attr("metric", plan.metric)
        study.set_user_attr("overrides", plan.fixed)
        retried = studies.fail_interrupted(study, storage)
        done = sum(1 for t in study.trials if t.state.is_finished() and t.user_attrs.get("status") != "interrupted")
        print(
            f"search: study {name} ({plan.sampler}, {plan.direction} {plan.metric}), {done}/{plan.n_trials} trials "
            "done"
            + (f", {retried} interrupted trial(s) queued again" if retried else "")
            + f"\nsearch: storage {storage}\nsearch: sweep dir {sweep_dir}",
            flush=True,
        )
        return study, distributions

    def _run_trials(
        self, plan: Plan, study: optuna.Study, distributions: dict[str, Any], where: tuple[str, str, Path], seed: int
    ) -> list[Any]:
        """Ask a batch of trials, launch their jobs as one Hydra batch, tell the results; until the budget is used."""
        name, storage, sweep_dir = where
        per_trial = [(r, f) for f in plan.folds for r in range(plan.repeats)]
        results = []
        while (remaining := plan.n_trials - studies.counted(study)) > 0:
            if plan.grid and study.sampler.is_exhausted(study) and not studies.has_waiting(study):
                break
            trials = [study.ask(distributions) for _ in range(min(plan.n_jobs, remaining))]
            batch, owners = [], []
            for trial in trials:
                trial.set_user_attr("host", socket.gethostname())
                trial.set_user_attr("pid", os.getpid())
                params = [f"{k}={_format(v)}" for k, v in trial.params.items()]
                for j, (r, fold) in enumerate(per_trial):
                    extra = [f"seed={seed + r}"] if plan.repeats > 1 else []
                    extra += [f"data.fold={fold}"] if fold is not None else []
                    subdir = str(trial.number) if len(per_trial) == 1 else f"{trial.number}_{j}"
                    if plan.pruner:  # the job's OptunaPruning callback reattaches to this trial
                        number = optuna_compat.trial_id(study, trial.number, storage)
                        info = {"study": name, "storage": storage, "trial_id": number}
                        info["pruner_kwargs"] = plan.pruner_kwargs
                        extra.append(f"++hydra.job.env_set.ABLATE_OPTUNA_TRIAL='{json.dumps(info)}'")
                    batch.append(
                        [*plan.fixed, *params, *extra, f"hydra.sweep.dir='{sweep_dir}'", f"hydra.sweep.subdir={subdir}"]
                    )
                    owners.append(trial)
            self.validate_batch_is_legal(batch)
            os.environ[SEARCH_COMMAND_ENV] = search_command()  # an interrupted trial's resume advice
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number * len(per_trial))
            results.append(returns)
            for trial in trials:
                tell(
                    study,
                    trial,
                    [ret for ret, owner in zip(returns, owners, strict=True) if owner is trial],
                    plan.metric,
                )
        return results

    def _study_name(self, fixed: list[str], space: dict[str, Any], sampler: str) -> str:
        return studies.study_name(self.params, fixed, space, sampler)

    def _sweep_dir(self, study_name: str) -> Path:
        assert self.config is not None
        user_set = any(o.startswith("hydra.sweep.dir=") for o in self.config.hydra.overrides.hydra)
        if user_set:
            return Path(str(self.config.hydra.sweep.dir)).resolve()
        return (Path(str(self.params["searches_dir"])) / study_name).resolve()

    def _check_composes(self, fixed: list[str], space: dict[str, Any]) -> None:
        """Compose one job (each parameter at one of its values) before anything is written: a typo in a key or a
        value fails here, once, not in every trial."""
        try:
            self.validate_batch_is_legal([sample_job(fixed, space)])
        except HydraException as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SearchError(
                f"error: the search's jobs do not compose: {first_line}; check the overrides and space"
            ) from None
