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
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import math
import os
import shlex
import socket
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, read_write

from ablate.config import metric_registry
from ablate.errors import ConfigError
from ablate.runtime.results import pid_alive
from ablate.runtime.sweep_recap import SEARCH_COMMAND_ENV

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

SAMPLERS = ("random", "tpe", "grid")
# Overrides that do not change what a trial computes, so they do not change the study's name either.
_NOT_IN_STUDY_NAME = ("hydra.", "hydra/", "ckpt_path")
# Overrides that only make sense for the search itself: left out of the command that reruns its best trial.
_NOT_IN_RERUN = ("hydra.", "hydra/", "hparams_search=", "search.", "ckpt_path=")
BEST_FILE = "best.yaml"


class SearchError(HydraException):
    """A search that cannot start; Hydra prints the message without a traceback."""


def _distribution(name: str, override: Override, grid: bool) -> Any:
    """Hydra sweep syntax -> an Optuna distribution (or, for the grid sampler, the list of grid values)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if isinstance(value, ChoiceSweep):
        choices = list(override.sweep_iterator())
        return list(choices) if grid else CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise SearchError(
                f"error: {name}={override.input_line.split('=', 1)[1]} holds no value (start must be below stop for "
                f"a positive step); e.g. {name}=range(1, 5)"
            )
        if grid:
            return values
        if all(isinstance(v, int) for v in values):
            return IntDistribution(int(value.start), int(values[-1]), step=int(value.step))
        return FloatDistribution(float(value.start), float(values[-1]), step=float(value.step))
    if isinstance(value, IntervalSweep):
        if grid:
            raise SearchError(
                f"error: the grid sampler needs discrete values for {name} (got interval); "
                f"use choice(...) or range(...), or hparams_search=random / tpe"
            )
        log_scale = "log" in value.tags
        _check_interval(name, float(value.start), float(value.end), log_scale)
        if isinstance(value.start, int) and isinstance(value.end, int) and not log_scale:
            return IntDistribution(value.start, value.end)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise SearchError(f"error: {name}={override.input_line} is not a search range; use choice(), range() or interval()")


def _check_interval(name: str, low: float, high: float, log_scale: bool) -> None:
    """Optuna's own checks raise bare ValueErrors mid-sweep; these name the key and the fix."""
    if low > high:
        raise SearchError(
            f"error: {name}: interval({low:g}, {high:g}) needs low <= high; e.g. interval({high:g}, {low:g})"
        )
    if log_scale and low <= 0:
        raise SearchError(
            f"error: {name}: a log range needs low > 0, got interval({low:g}, {high:g}); "
            f"e.g. tag(log, interval({high / 1000 if high > 0 else 1e-4:g}, {high if high > 0 else 1e-1:g}))"
        )


def _parse_space(params: dict[str, Any], arguments: Sequence[str], grid: bool) -> tuple[dict[str, Any], list[str]]:
    """The search space (config params, then command-line sweeps) and the fixed command-line overrides."""
    parser = OverridesParser.create()
    space_lines = {key: f"{key}={value}" for key, value in params.items()}
    fixed: list[str] = []
    for override in parser.parse_overrides(list(arguments)):
        key = override.get_key_element()
        if override.is_sweep_override():
            space_lines[key] = override.input_line
        else:
            space_lines.pop(key, None)  # a value given on the command line is fixed, not searched
            fixed.append(override.input_line)
    space = {}
    for key, line in space_lines.items():
        override = parser.parse_override(line)
        if not override.is_sweep_override():  # a plain value in params: a fixed setting of the search
            fixed.append(line)
            continue
        space[key] = _distribution(key, override, grid)
    return space, fixed


def _format(value: Any) -> str:
    """A parameter value as an override: floats in full (repr round-trips), so the job runs the trial's value."""
    return repr(value) if isinstance(value, float) else str(value)


def _short(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _direction(metric: str, direction: str) -> str:
    """Optuna's direction for ``metric``: the metric registry's (auto), or an explicit minimize / maximize."""
    if direction not in ("auto", "minimize", "maximize"):
        raise SearchError(f"error: hydra.sweeper.direction={direction}; use auto, minimize or maximize")
    try:
        known = metric_registry.direction(metric)  # an unknown metric is an error even with an explicit direction
    except ConfigError as err:
        raise SearchError(f"error: optimized_metric: {err}") from None
    return known if direction == "auto" else direction


def _select(config: DictConfig, key: str) -> Any:
    try:  # only the keys needed here: the rest may refer to ${hydra:...}, which the sweeper cannot always resolve
        return OmegaConf.select(config, key, default=None)
    except Exception:
        return None


def recipe_metrics(config: DictConfig, space: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(per-epoch, end-of-run) validation metrics that the search's jobs write; [] without a validation split."""
    from ablate.config.rules import _has_validation

    data = {k: _select(config, f"data.{k}") for k in ("val_size", "num_folds")}
    if not _has_validation(data, {"limit_val_batches": _select(config, "trainer.limit_val_batches")}):
        return [], []
    name, cycles = str(_select(config, "ensemble.name") or "none"), _select(config, "ensemble.cycles")
    searched = space.get("ensemble")  # ensemble=choice(ema, swa): any of them may run
    names = [name]
    if searched is not None:
        names = [str(c) for c in (searched if isinstance(searched, list) else getattr(searched, "choices", ()))]
    per_epoch: list[str] = []
    end: list[str] = []
    for each in names:
        a, b = metric_registry.recipe_val_metrics(each, cycles if each == name else None)
        per_epoch += [m for m in a if m not in per_epoch]
        end += [m for m in b if m not in end]
    return per_epoch, end


def _check_objective(metric: str, per_epoch: list[str], end: list[str], pruned: bool) -> None:
    """Refuse, before the first trial, an objective that no job of this search writes (every trial would fail)."""
    if not per_epoch:
        raise SearchError(
            f"error: optimized_metric={metric} needs a validation split, and this recipe has none; "
            "set data.val_size > 0 (e.g. data.val_size=0.1) or data.num_folds >= 2"
        )
    if metric not in per_epoch + end:
        raise SearchError(
            f"error: optimized_metric={metric} is not written by this recipe; it writes {', '.join(per_epoch + end)}"
        )
    if pruned and metric not in per_epoch:
        raise SearchError(
            f"error: hydra.sweeper.pruner watches the objective after every epoch, but {metric} is computed once "
            f"after training; optimize a per-epoch metric ({', '.join(per_epoch)}) or set hydra.sweeper.pruner=null"
        )


def _job_outcome(ret: Any, metric: str = "the objective") -> tuple[float | None, str, str | None, str | None]:
    """(value, status, error, run dir) of one finished Hydra job, from its return and its results.json."""
    run_dir = None
    with contextlib.suppress(Exception):  # a job that failed before Hydra set up its dir has none
        run_dir = str(ret.hydra_cfg.hydra.runtime.output_dir)
    record: dict[str, Any] = {}
    if run_dir and (Path(run_dir) / "results.json").is_file():
        try:
            record = json.loads((Path(run_dir) / "results.json").read_text())
        except (OSError, ValueError):
            record = {}
    value = ret._return_value if ret.status.name == "COMPLETED" else None
    if isinstance(value, int | float) and math.isfinite(float(value)):
        return float(value), "completed", None, run_dir
    status = record.get("status") if record.get("status") in ("diverged", "failed") else "failed"
    missing = f"the run wrote no finite {metric}"
    error = record.get("error") or (repr(ret._return_value) if ret.status.name != "COMPLETED" else missing)
    return None, status, error, run_dir


def _build_sampler(cls: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """The sampler, or a one-line error naming the keyword arguments it takes (Optuna raises a bare TypeError)."""
    taken = [
        p for p in inspect.signature(cls).parameters if p not in ("self", "seed", "search_space", "args", "kwargs")
    ]
    unknown = sorted(set(kwargs) - set(inspect.signature(cls).parameters))
    if unknown:
        raise SearchError(
            f"error: hydra.sweeper.sampler_kwargs: the {name} sampler takes no {', '.join(unknown)}; "
            f"it takes {', '.join(taken) or 'no keyword arguments (besides seed)'}"
        )
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError) as err:
        raise SearchError(f"error: hydra.sweeper.sampler_kwargs {kwargs}: {err}") from None


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

    # -- set-up ---------------------------------------------------------------------------------------------------
    def _sampler(self, name: str, space: dict[str, Any], trials_so_far: int) -> optuna.samplers.BaseSampler:
        import optuna

        seed = self.params.get("seed")
        if seed is not None and trials_so_far:
            # A resumed search must not replay the first run's random draws: shift the seed by the trials so far.
            seed = int(seed) + trials_so_far
        kwargs = dict(self.params.get("sampler_kwargs") or {})
        if name == "random":
            return _build_sampler(optuna.samplers.RandomSampler, name, seed=seed, **kwargs)
        if name == "tpe":
            return _build_sampler(optuna.samplers.TPESampler, name, seed=seed, **kwargs)

        class AskTellGridSampler(optuna.samplers.GridSampler):
            def after_trial(self, *args: Any, **kwargs: Any) -> None:
                # Optuna's calls study.stop(), which works only inside study.optimize; the sweeper stops by itself.
                pass

        return _build_sampler(AskTellGridSampler, name, space, seed=seed, **kwargs)

    def _study_name(self, fixed: list[str], space: dict[str, Any], sampler: str) -> str:
        if self.params.get("study_name"):
            return str(self.params["study_name"])
        kept = sorted(o for o in fixed if not o.startswith(_NOT_IN_STUDY_NAME))
        content: dict[str, Any] = {"overrides": kept, "space": {k: repr(v) for k, v in sorted(space.items())}}
        if self.params.get("seed") not in (None, 0):
            # Another sampler seed is another search (not a resume of seed 0's); seed 0 keeps the old names.
            content["sampler_seed"] = int(self.params["seed"])
        key = json.dumps(content)
        return f"{sampler}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"

    def _sweep_dir(self, study_name: str) -> Path:
        assert self.config is not None
        user_set = any(o.startswith("hydra.sweep.dir=") for o in self.config.hydra.overrides.hydra)
        if user_set:
            return Path(str(self.config.hydra.sweep.dir)).resolve()
        return (Path(str(self.params["searches_dir"])) / study_name).resolve()

    def _fail_interrupted(self, study: optuna.Study) -> int:
        """Trials a killed sweeper on this machine left RUNNING: mark them FAIL and queue their parameters again."""
        from optuna.trial import TrialState

        host, retried = socket.gethostname(), 0
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            attrs = trial.user_attrs
            if attrs.get("host") != host or pid_alive(int(attrs.get("pid", -1))):
                continue  # another machine's (or a live process's) trial
            # A finished trial's attributes are read-only, so mark it through the storage (Optuna's public
            # BaseStorage API) before telling it FAIL.
            study._storage.set_trial_user_attr(trial._trial_id, "status", "interrupted")
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
            retried += 1
        return retried

    def _check_composes(self, fixed: list[str], space: dict[str, Any]) -> None:
        """Compose one job (each parameter at one of its values) before anything is written: a typo in a key or a
        value fails here, once, not in every trial."""
        sample = {}
        for key, dist in space.items():
            values = dist if isinstance(dist, list) else getattr(dist, "choices", None)
            sample[key] = values[0] if values else dist.low
        job = [*fixed, *(f"{k}={_format(v)}" for k, v in sample.items())]
        try:
            self.validate_batch_is_legal([job])
        except HydraException as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SearchError(
                f"error: the search's jobs do not compose: {first_line}; check the overrides and space"
            ) from None

    @staticmethod
    def _counted(study: optuna.Study) -> int:
        """Trials that use up the budget: every trial except those interrupted (they are run again)."""
        return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("status") != "interrupted")

    # -- the sweep ------------------------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        try:
            return self._sweep(arguments)
        except SearchError as err:  # the project's convention: one line, exit code 2, nothing written
            print(str(err), file=sys.stderr)
            sys.exit(2)
        except ConfigError as err:  # a rule of the rule book (ablate.config.rules.SEARCH_RULES)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)

    def _sweep(self, arguments: list[str]) -> Any:
        import optuna

        assert self.config is not None and self.launcher is not None
        from ablate.config.rules import validate_search

        p = validate_search(self.params)  # n_trials, n_jobs, repeats, ...: before anything is composed or written
        sampler_name = str(p.get("sampler", "tpe"))
        grid = sampler_name == "grid"
        space, fixed = _parse_space(dict(p.get("params") or {}), arguments, grid)
        if not space:
            raise SearchError("error: the search space is empty; set hydra.sweeper.params or use hparams_search=...")
        n_trials = p.get("n_trials")
        if n_trials is None:
            if not grid:
                raise SearchError("error: hydra.sweeper.n_trials is not set; give the number of trials to run")
            n_trials = math.prod(len(v) for v in space.values())
        n_jobs, repeats = int(p.get("n_jobs", 1)), int(p.get("repeats", 1))
        num_folds = int(p.get("num_folds", 0) or 0)
        folds = list(range(num_folds)) if num_folds >= 2 else [None]
        metric = str(p.get("metric", "val/acc_best"))
        if metric.startswith("test/"):
            raise SearchError(
                f"error: optimized_metric={metric} is a test metric; search on a validation metric (val/...)"
            )
        direction = _direction(metric, str(p.get("direction", "auto")))
        pruner_name = p.get("pruner")
        _check_objective(metric, *recipe_metrics(self.config, space), pruned=bool(pruner_name))
        if pruner_name and repeats * len(folds) > 1:
            raise SearchError(
                "error: hydra.sweeper.pruner needs one job per trial (one validation curve); "
                "set search.repeats=1 and data.num_folds=0, or hydra.sweeper.pruner=null"
            )
        pruner_kwargs = dict(p.get("pruner_kwargs") or {})
        self._check_composes(fixed, space)

        study_name = self._study_name(fixed, space, sampler_name)
        sweep_dir = self._sweep_dir(study_name)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = p.get("storage") or f"sqlite:///{sweep_dir / 'optuna.db'}"
        with read_write(self.config.hydra.sweep):  # the launcher, the recap callback and the jobs use this dir
            self.config.hydra.sweep.dir = str(sweep_dir)

        distributions = {k: v for k, v in space.items() if not grid}
        if grid:
            distributions = {k: optuna.distributions.CategoricalDistribution(v) for k, v in space.items()}
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = self._sampler(sampler_name, space, 0)
        pruner = _build_pruner(pruner_kwargs) if pruner_name else None
        study = _open_study(study_name, storage, sampler, direction, pruner)
        if study.trials:
            study.sampler = self._sampler(sampler_name, space, len(study.trials))
        if study.direction.name.lower() != direction:
            raise SearchError(f"error: study {study_name} in {storage} was created to {study.direction.name.lower()}")
        _check_same_space(study, distributions, storage)
        study.set_user_attr("metric", metric)
        study.set_user_attr("overrides", fixed)
        retried = self._fail_interrupted(study)
        done = sum(1 for t in study.trials if t.state.is_finished() and t.user_attrs.get("status") != "interrupted")
        print(
            f"search: study {study_name} ({sampler_name}, {direction} {metric}), {done}/{n_trials} trials done"
            + (f", {retried} interrupted trial(s) queued again" if retried else "")
            + f"\nsearch: storage {storage}\nsearch: sweep dir {sweep_dir}",
            flush=True,
        )

        base_seed = int(self.config.get("seed", 0) or 0)
        per_trial = [(r, f) for f in folds for r in range(repeats)]
        results = []
        while (remaining := n_trials - self._counted(study)) > 0:
            if grid and study.sampler.is_exhausted(study) and not self._has_waiting(study):
                break
            trials = [study.ask(distributions) for _ in range(min(n_jobs, remaining))]
            batch, owners = [], []
            for trial in trials:
                trial.set_user_attr("host", socket.gethostname())
                trial.set_user_attr("pid", os.getpid())
                params = [f"{k}={_format(v)}" for k, v in trial.params.items()]
                for j, (r, fold) in enumerate(per_trial):
                    extra = [f"seed={base_seed + r}"] if repeats > 1 else []
                    extra += [f"data.fold={fold}"] if fold is not None else []
                    subdir = str(trial.number) if len(per_trial) == 1 else f"{trial.number}_{j}"
                    if pruner_name:  # the job's OptunaPruning callback reattaches to this trial
                        info = {"study": study_name, "storage": storage, "trial_id": trial._trial_id}
                        info["pruner_kwargs"] = pruner_kwargs
                        extra.append(f"++hydra.job.env_set.ABLATE_OPTUNA_TRIAL='{json.dumps(info)}'")
                    batch.append(
                        [*fixed, *params, *extra, f"hydra.sweep.dir='{sweep_dir}'", f"hydra.sweep.subdir={subdir}"]
                    )
                    owners.append(trial)
            self.validate_batch_is_legal(batch)
            os.environ[SEARCH_COMMAND_ENV] = _search_command()  # an interrupted trial's resume advice
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number * len(per_trial))
            results.append(returns)
            for trial in trials:
                self._tell(
                    study, trial, [ret for ret, owner in zip(returns, owners, strict=True) if owner is trial], metric
                )
        self._report_best(study, metric, sweep_dir, fixed, base_seed, len(per_trial))
        return results

    @staticmethod
    def _has_waiting(study: optuna.Study) -> bool:
        from optuna.trial import TrialState

        return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    @staticmethod
    def _tell(study: optuna.Study, trial: optuna.Trial, returns: Sequence[Any], metric: str) -> None:
        from optuna.trial import TrialState

        outcomes = [_job_outcome(ret, metric) for ret in returns]
        trial.set_user_attr("run_dirs", [o[3] for o in outcomes])
        params = _short(trial.params)
        pruned_at = study._storage.get_trial(trial._trial_id).user_attrs.get("pruned_at_epoch")  # set by the job
        if pruned_at is not None and all(o[0] is not None for o in outcomes):
            trial.set_user_attr("status", "pruned")
            study.tell(trial, state=TrialState.PRUNED)
            print(f"search: trial {trial.number} pruned after epoch {pruned_at}: {params}", flush=True)
            return
        bad = [o for o in outcomes if o[0] is None]
        if bad:
            status = "diverged" if any(o[1] == "diverged" for o in bad) else "failed"
            trial.set_user_attr("status", status)
            trial.set_user_attr("error", str(bad[0][2])[:500])
            study.tell(trial, state=TrialState.FAIL)
            print(
                f"search: trial {trial.number} {status}: {params} ({str(bad[0][2]).splitlines()[0][:200]})", flush=True
            )
            return
        values = [float(o[0]) for o in outcomes]  # type: ignore[arg-type]
        trial.set_user_attr("status", "completed")
        trial.set_user_attr("values", values)
        if len(values) > 1:
            trial.set_user_attr("std", statistics.stdev(values))
        study.tell(trial, statistics.fmean(values))
        print(f"search: trial {trial.number} {metric}={statistics.fmean(values):.4f}  {params}", flush=True)

    @staticmethod
    def _report_best(
        study: optuna.Study, metric: str, sweep_dir: Path, fixed: list[str], base_seed: int, jobs_per_trial: int
    ) -> None:
        from ablate.runtime.sweep_recap import record_search_trials

        record_search_trials(sweep_dir, trial_statuses(study))  # the recap and exit code follow Optuna's states
        try:
            best = study.best_trial
        except ValueError:
            print("search: no trial completed", flush=True)
            return
        path = sweep_dir / BEST_FILE
        path.write_text(best_record(study, best, metric, fixed, base_seed, jobs_per_trial))
        print(f"search: best trial {best.number}: {metric}={best.value:.4f}  {_short(best.params)}", flush=True)
        print(f"search: best trial's value, params, run dir and rerun command: {path}", flush=True)


def _build_pruner(kwargs: dict[str, Any]) -> Any:
    import optuna

    try:
        return optuna.pruners.MedianPruner(**kwargs)
    except (TypeError, ValueError) as err:
        taken = [p for p in inspect.signature(optuna.pruners.MedianPruner).parameters if p != "self"]
        raise SearchError(
            f"error: hydra.sweeper.pruner_kwargs {kwargs}: {err}; the median pruner takes {', '.join(taken)}"
        ) from None


def _open_study(name: str, storage: str, sampler: Any, direction: str, pruner: Any) -> optuna.Study:
    """Create or load the study; a storage URL that cannot be parsed or opened is a one-line error."""
    import optuna

    try:
        return optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, direction=direction, load_if_exists=True, pruner=pruner
        )
    except Exception as err:  # SQLAlchemy's ArgumentError, NoSuchModuleError, OperationalError, ...: all unusable URLs
        if isinstance(err, SearchError):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SearchError(
            f"error: hydra.sweeper.storage={storage} cannot be opened ({type(err).__name__}: {first}); give a "
            "SQLAlchemy URL that this machine can reach, e.g. sqlite:///search.db or postgresql://user@host/db "
            "(null: <sweep dir>/optuna.db)"
        ) from None


def _check_same_space(study: optuna.Study, distributions: dict[str, Any], storage: str) -> None:
    """A resumed study must keep its search space: Optuna's samplers cannot mix spaces (they fail mid-sweep)."""
    import optuna

    wanted = {k: optuna.distributions.distribution_to_json(v) for k, v in sorted(distributions.items())}
    stored = study.user_attrs.get("space")
    if stored is None:
        if not study.trials:
            study.set_user_attr("space", wanted)
            return
        stored = {}  # a study from before the space was recorded: compare with its trials' distributions
        for trial in study.get_trials(deepcopy=False):
            stored.update({k: optuna.distributions.distribution_to_json(v) for k, v in trial.distributions.items()})
        if not stored:
            return
    changed = [k for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
    if changed:

        def shown(space: dict[str, str], key: str) -> str:
            return repr(optuna.distributions.json_to_distribution(space[key])) if key in space else "absent"

        diff = "; ".join(f"{k}: was {shown(stored, k)}, now {shown(wanted, k)}" for k in changed)
        raise SearchError(
            f"error: study {study.study_name} in {storage} was run with another search space ({diff}); "
            "resume it with its original space, or start a new study (another hydra.sweeper.study_name)"
        )


def trial_statuses(study: optuna.Study) -> dict[str, str]:
    """{trial number: status} in Optuna's terms: completed, pruned, failed / diverged / interrupted (FAIL), running."""
    from optuna.trial import TrialState

    statuses = {}
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.COMPLETE:
            statuses[str(trial.number)] = "completed"
        elif trial.state == TrialState.PRUNED:
            statuses[str(trial.number)] = "pruned"
        elif trial.state == TrialState.FAIL:
            status = trial.user_attrs.get("status")
            statuses[str(trial.number)] = status if status in ("diverged", "interrupted") else "failed"
        elif trial.state == TrialState.RUNNING:
            statuses[str(trial.number)] = "running"
    return statuses


def _search_command() -> str:
    """The command that started this search, as typed (running it again resumes the study)."""
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "train.py"
    return shlex.join(["python", script, *sys.argv[1:]])


def rerun_command(fixed: list[str], params: dict[str, Any]) -> str:
    """``python train.py`` with the search's fixed overrides and the trial's parameters, without the search itself
    (a trial of several jobs: its first, i.e. the base seed and fold 0)."""
    kept = [o for o in fixed if not o.lstrip("+~").startswith(_NOT_IN_RERUN)]
    return shlex.join(["python", "train.py", *kept, *(f"{k}={_format(v)}" for k, v in params.items())])


def best_record(
    study: optuna.Study, best: Any, metric: str, fixed: list[str], base_seed: int, jobs_per_trial: int
) -> str:
    """best.yaml: the best trial's value, parameters, run dirs and the command that reruns it (its first job)."""
    record = {
        "study": study.study_name,
        "metric": metric,
        "direction": study.direction.name.lower(),
        "trial": best.number,
        "value": float(best.value),
        "values": best.user_attrs.get("values", [float(best.value)]),
        "params": dict(best.params),
        "run_dirs": best.user_attrs.get("run_dirs", []),
        "command": rerun_command(fixed, best.params),
    }
    if jobs_per_trial > 1:
        record["note"] = (
            f"the value is the mean of {jobs_per_trial} jobs (seeds {base_seed}.. and/or folds); the command reruns "
            "the first"
        )
    return OmegaConf.to_yaml(OmegaConf.create(record))
