"""Run folders: one per run, chosen before Hydra creates it (OmegaConf resolvers used in configs/hydra/default.yaml).

- ``${ablate.stamp:}``: a time stamp to the millisecond plus a random suffix, so two runs started in the same
  millisecond still get two folders. Cached, so every read in one process (and every job of a sweep, which
  receives a copy of the cache) sees the same value.
- ``${ablate.sweep_dir:<base>}``: ``<base>/<stamp>`` (a sweep's folder; its jobs are numbered inside).
- ``${ablate.run_dir:<base>,<ckpt_path>}``: ``<base>/<stamp>``, except when ``ckpt_path`` is a checkpoint of an
  interrupted run (status ``interrupted``, or ``running`` with its process gone): then that run's folder, so the
  run continues in place. A finished run's checkpoint gives a new folder; the run never writes into the old one.
  On a SLURM requeue (``SLURM_RESTART_COUNT`` > 0) the interrupted run of the same job id is continued.
- ``${ablate.hydra_subdir:<run dir>}``: ``.hydra``, or null (Hydra then saves no config) when the folder already
  holds a run: a resumed run keeps the original ``.hydra/``; its own overrides go to ``results.json`` ``resumes``.

Imports no torch (train.py registers these before Hydra starts).
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path

from ablate.runtime.results import effective_status, load_results, slurm_job_id


def stamp() -> str:
    now = time.time()
    millis = int(now * 1000) % 1000
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S', time.localtime(now))}-{millis:03d}_{secrets.token_hex(4)}"


def checkpoint_run(ckpt_path: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/x.ckpt`` with ``<run>/results.json``), if any."""
    folder = Path(ckpt_path).resolve().parent
    if folder.name == "checkpoints" and (folder.parent / "results.json").is_file():
        return folder.parent
    return None


def status_of(run: Path) -> str:
    try:
        return effective_status(load_results(run / "results.json"))
    except (OSError, ValueError):
        return "unreadable"


def fail(message: str) -> None:
    """A one-line error before anything is written (exit 2, as ablate.errors.ConfigError)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_folder(path: str | Path, what: str) -> None:
    """Error unless ``path`` is a folder or can become one (no regular file on the way)."""
    for part in (Path(path), *Path(path).parents):
        if part.exists():
            if not part.is_dir():
                fail(f"{what} {path}: {part} is a file, not a folder; choose another {what}")
            return


def _slurm_requeued_run(base: Path) -> Path | None:
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1 or not base.is_dir():
        return None
    job = slurm_job_id()
    for results in sorted(base.glob("*/results.json"), reverse=True):
        try:
            record = load_results(results)
        except (OSError, ValueError):
            continue
        if record.get("slurm_job_id") == job and effective_status(record) == "interrupted":
            return results.parent
    return None


def run_dir(base: str, ckpt_path: str | None = None) -> str:
    if ckpt_path and Path(ckpt_path).is_file():
        run = checkpoint_run(ckpt_path)
        if run is not None and status_of(run) == "interrupted":
            return str(run)
    requeued = _slurm_requeued_run(Path(base))
    if requeued is not None:
        return str(requeued)
    check_folder(base, "run folder")
    return str(Path(base) / stamp())


def sweep_dir(base: str) -> str:
    check_folder(base, "sweep folder")
    return str(Path(base) / stamp())


def hydra_subdir(output_dir: str) -> str | None:
    return None if (Path(output_dir) / "results.json").exists() else ".hydra"


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    for name, fn in (
        ("ablate.stamp", stamp),
        ("ablate.run_dir", run_dir),
        ("ablate.sweep_dir", sweep_dir),
        ("ablate.hydra_subdir", hydra_subdir),
    ):
        OmegaConf.register_new_resolver(name, fn, use_cache=True, replace=True)
