"""What a sweep says when it ends: a one-line recap, and an exit code that tells the truth.

``SweepRecap`` prints the jobs' counts by status, the sweep dir and the table command. The exit code is non-zero when
any job failed, diverged or was interrupted; in a hyperparameter search only when a trial failed (crashed or was
misconfigured): diverged trials are part of what a search finds.

Hydra's basic launcher runs the jobs in this process, and each job's ``ablate.run.main`` records its status in
``results.json`` and returns (a failed job does not stop the sweep). ``SweepExitCode`` reads those files after
the last job (``on_multirun_end``, so it works for any launcher whose jobs write into the sweep folder) and
``train.py`` exits with ``exit_code()`` once Hydra returns: after every recap printed by other callbacks, whatever
the callbacks' order. Imports no torch.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from ablate.rundir import status_of

_EXIT_CODE = 0


def job_statuses(sweep_dir: str | Path) -> dict[str, str]:
    """{job folder name: effective status} for every job of a sweep that wrote a results.json."""
    paths = sorted(Path(sweep_dir).glob("*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name))
    return {path.parent.name: status_of(path.parent) for path in paths}


def describe(statuses: dict[str, str]) -> str:
    return ", ".join(f"job {job} {status}" for job, status in statuses.items()) or "none"


def interrupted_message(sweep_dir: str | Path, signum: int) -> str:
    import signal

    statuses = job_statuses(sweep_dir)
    return (
        f"sweep interrupted by {signal.Signals(signum).name}: jobs that ran: {describe(statuses)}; "
        f"later jobs did not start ({sweep_dir})"
    )


def is_search(config: Any) -> bool:
    """Whether this multirun is a hyperparameter search (hparams_search=..., our Optuna sweeper)."""
    return "ablate_optuna_sweeper" in str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))


def exit_code() -> int:
    """1 when the last sweep of this process had a job that did not complete, else 0."""
    return _EXIT_CODE


class SweepExitCode(Callback):
    """Hydra callback: after a sweep, remember (and say) whether every job completed."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        global _EXIT_CODE
        sweep_dir = config.hydra.sweep.dir
        statuses = job_statuses(sweep_dir)
        # In a hyperparameter search, diverged trials are findings (that region of the space does not train), and a
        # trial interrupted by a killed search is rerun when the search resumes: only a crashed trial is an error.
        expected = ("completed", "diverged", "interrupted") if is_search(config) else ("completed",)
        bad = {job: s for job, s in statuses.items() if s not in expected}
        _EXIT_CODE = 1 if bad else 0
        if bad:
            print(
                f"error: {len(bad)} of {len(statuses)} sweep jobs did not complete ({describe(bad)}); "
                f"see {sweep_dir}/<job>/results.json",
                file=sys.stderr,
            )


def recap(sweep_dir: str | Path) -> str:
    """One line: the jobs' statuses from their results.json, the sweep dir and the table command."""
    counts = Counter(job_statuses(sweep_dir).values())
    parts = [f"{counts.pop(s, 0)} {s}" for s in ("completed", "diverged", "failed")]
    parts += [f"{n} {s}" for s, n in sorted(counts.items())]
    return f"sweep: {', '.join(parts)} in {sweep_dir}; table: python -m ablate.table {sweep_dir}"


class SweepRecap(Callback):
    """Prints ``recap`` when a multirun ends (configured under hydra.callbacks in configs/hydra/default.yaml)."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        print(recap(str(config.hydra.sweep.dir)), flush=True)
