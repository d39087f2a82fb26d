"""A trial's outcome and the search's result: each job's value and status (from its return and results.json), the
trial told to Optuna (the mean over its jobs; FAIL if one failed or diverged; PRUNED), and best.yaml with the command
that reruns the best trial."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from hydra_plugins.ablate_optuna_sweeper import hydra_compat, optuna_compat
from hydra_plugins.ablate_optuna_sweeper.space import _format, _short
from hydra_plugins.ablate_optuna_sweeper.study import trial_statuses

if TYPE_CHECKING:
    import optuna

# Overrides that only make sense for the search itself: left out of the command that reruns its best trial.
_NOT_IN_RERUN = ("hydra.", "hydra/", "hparams_search=", "search.", "ckpt_path=")
BEST_FILE = "best.yaml"


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
    value = hydra_compat.job_value(ret)
    if isinstance(value, int | float) and math.isfinite(float(value)):
        return float(value), "completed", None, run_dir
    status = record.get("status") if record.get("status") in ("diverged", "failed") else "failed"
    missing = f"the run wrote no finite {metric}"
    error = record.get("error") or (hydra_compat.job_error(ret) if ret.status.name != "COMPLETED" else missing)
    return None, status, error, run_dir


def tell(study: optuna.Study, trial: optuna.Trial, returns: Sequence[Any], metric: str) -> None:
    """Tell Optuna the trial's outcome over its jobs, and say it in one line."""
    from optuna.trial import TrialState

    outcomes = [_job_outcome(ret, metric) for ret in returns]
    trial.set_user_attr("run_dirs", [o[3] for o in outcomes])
    params = _short(trial.params)
    pruned_at = optuna_compat.fresh_user_attrs(study, trial.number).get("pruned_at_epoch")  # set by the job
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
        print(f"search: trial {trial.number} {status}: {params} ({str(bad[0][2]).splitlines()[0][:200]})", flush=True)
        return
    values = [float(o[0]) for o in outcomes]  # type: ignore[arg-type]
    trial.set_user_attr("status", "completed")
    trial.set_user_attr("values", values)
    if len(values) > 1:
        trial.set_user_attr("std", statistics.stdev(values))
    study.tell(trial, statistics.fmean(values))
    print(f"search: trial {trial.number} {metric}={statistics.fmean(values):.4f}  {params}", flush=True)


def report_best(
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


def search_command() -> str:
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
