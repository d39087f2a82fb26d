"""What a sweep says when it ends: a one-line recap, and an exit code that tells the truth.

``SweepRecap`` prints the jobs' counts by status, the sweep dir and the table command. The exit code is non-zero when
any job failed, diverged or was interrupted; in a hyperparameter search only when a trial failed (crashed or was
misconfigured): diverged trials are part of what a search finds.

Hydra's basic launcher runs the jobs in this process, and each job's ``ablate.runtime.job.main`` records its status in
``results.json`` and returns (a failed job does not stop the sweep). ``SweepExitCode`` reads those files after
the last job (``on_multirun_end``, so it works for any launcher whose jobs write into the sweep folder) and
``train.py`` exits with ``exit_code()`` once Hydra returns: after every recap printed by other callbacks, whatever
the callbacks' order. In a hyperparameter search the counts are the study's trials as Optuna marked them (the sweeper
calls ``record_search_trials``): a job can complete and its trial still FAIL (no objective value), and a trial can be
several jobs. A search in which no trial completed exits non-zero. Imports no torch.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from ablate.runtime.rundir import status_of

_EXIT_CODE = 0
SEARCH_COMMAND_ENV = "ABLATE_SEARCH_COMMAND"  # the command that started the running search (set by its sweeper)
# sweep dir -> {trial number: status}, set by the Optuna sweeper at the end of its sweep (same process as the recap).
_SEARCH_TRIALS: dict[str, dict[str, str]] = {}


def record_search_trials(sweep_dir: str | Path, statuses: dict[str, str]) -> None:
    _SEARCH_TRIALS[str(Path(sweep_dir).resolve())] = dict(statuses)


def statuses_of(sweep_dir: str | Path) -> dict[str, str]:
    """A search's trial statuses (Optuna's), else the jobs' statuses from their results.json."""
    trials = _SEARCH_TRIALS.get(str(Path(sweep_dir).resolve()))
    return trials if trials is not None else job_statuses(sweep_dir)


def job_statuses(sweep_dir: str | Path) -> dict[str, str]:
    """{job folder name: effective status} for every job of a sweep that wrote a results.json."""
    paths = sorted(Path(sweep_dir).glob("*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name))
    return {path.parent.name: status_of(path.parent) for path in paths}


def describe(statuses: dict[str, str], unit: str = "job") -> str:
    return ", ".join(f"{unit} {job} {status}" for job, status in statuses.items()) or "none"


def interrupted_message(sweep_dir: str | Path, signum: int) -> str:
    import signal

    from ablate.runtime.sweep_continue import continue_command

    statuses = job_statuses(sweep_dir)
    how = (search_resume_advice() if in_search() else None) or (
        f"{continue_command(sweep_dir)}   (completed jobs are skipped, interrupted ones resume from last.ckpt)"
    )
    return (
        f"sweep interrupted by {signal.Signals(signum).name}: jobs that ran: {describe(statuses)}; "
        f"later jobs did not start ({sweep_dir}); continue it: {how}"
    )


def is_search(config: Any) -> bool:
    """Whether this multirun is a hyperparameter search (hparams_search=..., our Optuna sweeper)."""
    return "ablate_optuna_sweeper" in str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))


def in_search() -> bool:
    """Whether this process runs a job of a hyperparameter search (Hydra's config of the running job says so)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    return "ablate_optuna_sweeper" in str(OmegaConf.select(HydraConfig.get(), "sweeper._target_", default=""))


def search_resume_advice() -> str | None:
    """For an interrupted search trial: the search's own command (set by the sweeper), which resumes the study and
    runs interrupted trials again; for a job of another multirun, the command that continues the sweep (set by
    ``SweepRecap``; ablate.runtime.sweep_continue); None outside a sweep."""
    from ablate.runtime.sweep_continue import CONTINUE_COMMAND_ENV

    command = os.environ.get(SEARCH_COMMAND_ENV)
    if command and in_search():
        return f"{command}   (the search resumes its study and runs interrupted trials again)"
    sweep = os.environ.get(CONTINUE_COMMAND_ENV)
    if sweep and _in_multirun():
        return f"{sweep}   (the sweep skips its completed jobs and resumes this one from last.ckpt)"
    return None


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def exit_code() -> int:
    """1 when the last sweep of this process had a job that did not complete, else 0."""
    return _EXIT_CODE


class SweepExitCode(Callback):
    """Hydra callback: after a sweep, remember (and say) whether every job completed."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        global _EXIT_CODE
        sweep_dir = config.hydra.sweep.dir
        search = is_search(config)
        statuses = statuses_of(sweep_dir) if search else job_statuses(sweep_dir)
        # In a hyperparameter search, diverged and pruned trials are findings (that region of the space does not
        # train), and a trial interrupted by a killed search is rerun when the search resumes: a failed trial is an
        # error, and so is a search in which no trial completed (it found nothing).
        expected = ("completed", "diverged", "interrupted", "pruned") if search else ("completed",)
        bad = {job: s for job, s in statuses.items() if s not in expected}
        none_completed = search and "completed" not in statuses.values()
        _EXIT_CODE = 1 if bad or none_completed else 0
        what, unit = ("trials of the search", "trial") if search else ("sweep jobs", "job")
        if bad:
            print(
                f"error: {len(bad)} of {len(statuses)} {what} did not complete ({describe(bad, unit)}); "
                f"see {sweep_dir}/<job>/results.json",
                file=sys.stderr,
            )
        elif none_completed:
            print(
                f"error: no trial of the search completed ({describe(statuses, unit)}); see {sweep_dir}",
                file=sys.stderr,
            )


def recap(sweep_dir: str | Path) -> str:
    """One line: the jobs' statuses from their results.json (a search's: its trials'), the sweep dir and the table
    command."""
    search = str(Path(sweep_dir).resolve()) in _SEARCH_TRIALS
    counts = Counter(statuses_of(sweep_dir).values())
    parts = [f"{counts.pop(s, 0)} {s}" for s in ("completed", "diverged", "failed")]
    parts += [f"{n} {s}" for s, n in sorted(counts.items())]
    unit = " trials" if search else ""
    return f"sweep: {', '.join(parts)}{unit} in {sweep_dir}; table: python -m ablate.table {sweep_dir}"


class SweepRecap(Callback):
    """Prints ``recap`` when a multirun ends (configured under hydra.callbacks in configs/hydra/default.yaml); for a
    sweep run again into its folder, first a line that names the jobs skipped, resumed, rerun and run fresh."""

    def __init__(self) -> None:
        self._before: dict[str, Any] = {}

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from ablate.runtime import sweep_continue

        if is_search(config):  # a search resumes its study instead (its sweeper says how many trials are done)
            return
        sweep_dir = str(config.hydra.sweep.dir)
        self._before = sweep_continue.snapshot(sweep_dir)
        # The jobs' interrupt advice; an environment variable reaches jobs that joblib runs in other processes.
        os.environ[sweep_continue.CONTINUE_COMMAND_ENV] = sweep_continue.continue_command(sweep_dir, from_env=False)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from ablate.runtime import sweep_continue

        sweep_dir = str(config.hydra.sweep.dir)
        if self._before:  # a first run into an empty folder prints what it always printed
            print(sweep_continue.describe_kinds(sweep_continue.kinds(self._before, sweep_dir)), flush=True)
        print(recap(sweep_dir), flush=True)
