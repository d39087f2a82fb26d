"""Continuing a sweep: the same multirun command, run again into the same ``hydra.sweep.dir``, picks up where it ended.

Hydra numbers a sweep's jobs in a fixed order (``<sweep dir>/<job num>``), so the rerun's job N is the first run's
job N. Each job looks at its folder before anything is written:

- empty: the job runs (a first run into an empty folder is exactly what it was);
- the job's ``results.json`` records other overrides: a different command into this folder; refused (exit 2, one line),
  nothing is written;
- ``completed``: skipped; its folder is not touched and the job returns the recorded objective;
- ``interrupted`` (or ``running`` with its process gone): resumed in place from its ``last.ckpt``
  (``ablate.runtime.resume.plan``, the same path as a SLURM requeue), ``results.json`` lists the attempt in ``resumes``;
- ``failed`` or ``diverged``: run again from the start; the earlier attempt's files move to ``earlier-<k>/`` inside
  the job folder (its results.json renamed ``results.<status>.json``, so tables do not count it twice);
- still ``running`` (its process alive): refused (exit 2).

``Snapshot`` records the folder when the sweep starts (``SweepRecap.on_multirun_start``) and ``kinds`` compares it with
the folder at the end, so the recap can say which jobs were skipped, resumed, rerun and run fresh whatever launcher ran
them (joblib runs jobs in other processes). Imports no torch.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.errors import ConfigError
from ablate.runtime.results import effective_status, load_results

CONTINUE_COMMAND_ENV = "ABLATE_SWEEP_CONTINUE"  # set by the sweep process for its jobs (other processes under joblib)
KEPT_IN_PLACE = (".hydra",)  # the job's Hydra config stays valid (same overrides); logs stay open where they are


@dataclass(frozen=True)
class Earlier:
    """A job folder's state when the sweep started: its status, its results.json's mtime and its resume count."""

    status: str
    mtime_ns: int
    resumes: int


def _read(job: Path) -> dict[str, Any] | None:
    try:
        return load_results(job / "results.json")
    except (OSError, ValueError):
        return None


def snapshot(sweep_dir: str | Path) -> dict[str, Earlier]:
    """{job folder name: its state} for every job folder of ``sweep_dir`` that holds a results.json."""
    found: dict[str, Earlier] = {}
    for path in Path(sweep_dir).glob("*/results.json"):
        data = _read(path.parent)
        status = effective_status(data) if data is not None else "unreadable"
        resumes = len(data.get("resumes") or []) if data is not None else 0
        found[path.parent.name] = Earlier(status, path.stat().st_mtime_ns, resumes)
    return found


def kinds(before: dict[str, Earlier], sweep_dir: str | Path) -> dict[str, list[str]]:
    """What this sweep did with each job, by comparing the folder now with ``before``: skipped (completed before,
    untouched), resumed (interrupted before, one more resume), rerun (failed or diverged before) and fresh."""
    now = snapshot(sweep_dir)
    out: dict[str, list[str]] = {"skipped": [], "resumed": [], "rerun": [], "fresh": []}
    for job in sorted(now, key=lambda name: (len(name), name)):
        was = before.get(job)
        if was is None:
            out["fresh"].append(job)
        elif was.status == "completed" and now[job].mtime_ns == was.mtime_ns:
            out["skipped"].append(job)
        elif was.status == "interrupted" and now[job].resumes > was.resumes:
            out["resumed"].append(job)
        elif was.status in ("failed", "diverged") and now[job].mtime_ns != was.mtime_ns:
            out["rerun"].append(job)
    return out


def describe_kinds(found: dict[str, list[str]]) -> str:
    """``continued sweep: skipped (completed before): job 0; resumed from last.ckpt: job 1; run fresh: jobs 2, 3``."""
    labels = {
        "skipped": "skipped (completed before)",
        "resumed": "resumed from last.ckpt",
        "rerun": "rerun (failed or diverged before)",
        "fresh": "run fresh",
    }
    named = {kind: jobs for kind, jobs in found.items() if jobs}
    parts = [f"{labels[kind]}: {'jobs' if len(jobs) > 1 else 'job'} {', '.join(jobs)}" for kind, jobs in named.items()]
    return "continued sweep: " + ("; ".join(parts) or "no job ran")


def continue_command(sweep_dir: str | Path, from_env: bool = True) -> str:
    """The command that continues this sweep: the one that started it, with its folder named (a default sweep folder
    is a new time stamp on every start). ``from_env``: as the sweep process set it (a joblib job's own argv is not
    the sweep's)."""
    command = os.environ.get(CONTINUE_COMMAND_ENV) if from_env else None
    if command:
        return command
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "train.py"
    args = [a for a in sys.argv[1:] if not a.lstrip("+~").startswith("hydra.sweep.dir=")]
    return shlex.join(["python", script, *args, f"hydra.sweep.dir={sweep_dir}"])


def _same(recorded: list[str], now: list[str]) -> bool:
    """The same job: the same overrides in any order (ckpt_path aside: results.json records the run's own)."""
    own = [o for o in now if not o.lstrip("+").startswith("ckpt_path=")]
    return sorted(map(str, recorded)) == sorted(own)


def _set_aside(job: Path, status: str) -> Path:
    """Move a failed or diverged attempt's files into ``earlier-<k>/`` so the job can run again in its folder."""
    k = 1 + sum(1 for p in job.glob("earlier-*") if p.is_dir())
    aside = job / f"earlier-{k}"
    aside.mkdir()
    for path in job.iterdir():
        if path == aside or path.name in KEPT_IN_PLACE or path.name.startswith("earlier-") or path.suffix == ".log":
            continue
        target = aside / (f"results.{status}.json" if path.name == "results.json" else path.name)
        os.replace(path, target)
    return aside


def check_job_folder(output_dir: Path, overrides: list[str]) -> dict[str, Any] | None:
    """Before a sweep job writes anything: the earlier record when the job completed before (skip it), else None
    (run or resume it; a failed or diverged attempt is moved aside first). Raises ConfigError for a folder that holds
    another job, or a job that is still running."""
    data = _read(output_dir)
    if data is None:
        if (output_dir / "results.json").exists():
            raise ConfigError(
                f"job folder {output_dir} holds an unreadable results.json; move it away, or pick a new hydra.sweep.dir"
            )
        return None
    recorded = list(data.get("overrides") or [])
    if not _same(recorded, overrides):
        raise ConfigError(
            f"sweep folder {output_dir.parent} holds a different sweep: job {output_dir.name} ran with "
            f"({' '.join(recorded)}), this command's job {output_dir.name} has ({' '.join(overrides)}); continue a "
            "sweep with its own command, or pick a new hydra.sweep.dir (or leave it unset)"
        )
    status = effective_status(data)
    if status == "running":
        raise ConfigError(
            f"job {output_dir.name} in {output_dir.parent} is still running (pid {data.get('pid')} on "
            f"{data.get('host')}); wait for it to end (or stop it) before continuing the sweep"
        )
    if status == "completed":
        return data
    if status in ("failed", "diverged"):
        aside = _set_aside(output_dir, status)
        print(f"job {output_dir.name}: {status} before, running it again (earlier attempt in {aside})", flush=True)
    return None  # interrupted: ablate.runtime.resume.plan continues it in place from its last.ckpt


def completed_before(output_dir: Path, overrides: list[str]) -> dict[str, Any] | None:
    """For train.py in a sweep run again into its folder: the earlier record of a job that completed (said in its one
    line; the job is skipped), else None; a folder holding another job is a one-line error (exit 2)."""
    try:
        earlier = check_job_folder(output_dir, overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    if earlier is not None:
        print(job_line(overrides, f"skipped: completed before ({output_dir / 'results.json'})"), flush=True)
    return earlier


def job_line(overrides: list[str], result: str) -> str:
    """A multirun job's one line: ``job 3 (optimizer=adam seed=1): <result>``."""
    from hydra.core.hydra_config import HydraConfig

    num = HydraConfig.get().job.num if HydraConfig.initialized() else "?"
    return f"job {num} ({' '.join(overrides)}): {result}"
