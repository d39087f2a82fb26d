"""results.json: one file per run with its status, config, seed and final metrics. Tables are built from these.

The file is written at start (status ``running``), refreshed by a heartbeat while the run lives, and rewritten at
the end (``completed``, ``diverged``, ``failed`` or ``interrupted``); every write is atomic (a temp file unique to
the process + rename), so a reader never sees half a file. A run killed with ``kill -9`` cannot write its end:
``effective_status`` reads host, pid and ``heartbeat_at`` to report it as ``interrupted``.

Imports no torch: the run-folder resolver and the table read these files before (or without) loading torch.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import threading
import time
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ablate.training.liveness import pid_alive

SCHEMA_VERSION = 1
STATUSES = ("running", "completed", "diverged", "failed", "interrupted")
FINISHED = ("completed", "diverged", "failed")
HEARTBEAT_EVERY_S = 30.0
# A running record whose heartbeat is older than this is dead (another host, or a reused pid).
STALE_AFTER_S = 10 * 60.0
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def _plain(value: Any) -> Any:
    if hasattr(value, "numel") and hasattr(value, "tolist"):  # a tensor, without importing torch
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _now() -> str:
    return time.strftime(TIME_FORMAT, time.localtime())


def heartbeat_time(value: Any) -> float | None:
    """``heartbeat_at`` as Unix seconds: ISO text (what runs write) or a number; None when absent or unreadable."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def effective_status(record: dict[str, Any], now: float | None = None, stale_after: float = STALE_AFTER_S) -> str:
    """The status a reader should believe: a ``running`` record whose process is gone is ``interrupted``.

    Gone means: same host and the pid is dead, or the heartbeat is older than ``stale_after`` seconds. Records written
    before heartbeats existed (no ``heartbeat_at``) keep what they say.
    """
    status = record.get("status", "running")
    if status != "running":
        return status
    now = time.time() if now is None else now
    beat = heartbeat_time(record.get("heartbeat_at"))
    if beat is not None and now - beat > stale_after:
        return "interrupted"
    pid, host = record.get("pid"), record.get("host")
    if pid is not None and host == socket.gethostname() and not pid_alive(int(pid)):
        return "interrupted"
    return status


def _torch_version() -> str:
    """torch's version; without importing torch when a run fails before it was loaded (a config error stays fast;
    the package metadata lacks the local build tag, e.g. +cu130)."""
    torch = sys.modules.get("torch")
    return torch.__version__ if torch is not None else version("torch")


class RunRecord:
    """Accumulates what a run reports and writes it to ``<output_dir>/results.json``."""

    def __init__(self, output_dir: Path, config: dict[str, Any], overrides: list[str], seed: int, **extra: Any) -> None:
        self.path = Path(output_dir) / "results.json"
        self.started = time.time()
        self._lock = threading.RLock()
        self._heart: threading.Event | None = None
        self.data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "status": "running",
            "error": None,
            "overrides": overrides,
            "seed": seed,
            "metrics": {},
            "config": config,
            "run_dir": str(Path(output_dir).resolve()),
            "started_at": time.strftime(TIME_FORMAT, time.localtime(self.started)),
            "versions": {"python": platform.python_version(), "torch": _torch_version()},
            **_plain(extra),
        }
        self._mark_alive()

    @classmethod
    def reopen(cls, output_dir: Path, resume: dict[str, Any]) -> RunRecord:
        """Continue an interrupted run's record in place: same overrides, one more entry in ``resumes``."""
        self = cls.__new__(cls)
        self.path = Path(output_dir) / "results.json"
        self.started = time.time()
        self._lock = threading.RLock()
        self._heart = None
        self.data = load_results(self.path)
        wall = float(self.data.get("wall_time_s") or 0.0)
        self.started -= wall  # wall time counts every attempt
        self.data.update(status="running", error=None)
        self.data.setdefault("resumes", []).append({"at": _now(), **_plain(resume)})
        self._mark_alive()
        return self

    def _mark_alive(self) -> None:
        self.data.update(host=socket.gethostname(), pid=os.getpid(), heartbeat_at=_now())
        if os.environ.get("SLURM_JOB_ID"):
            self.data["slurm_job_id"] = slurm_job_id()

    def update(self, **fields: Any) -> None:
        with self._lock:
            self.data.update(_plain(fields))

    def start_heartbeat(self, every_s: float = HEARTBEAT_EVERY_S) -> None:
        """Refresh ``heartbeat_at`` from a daemon thread: nothing in the training loop pays for it."""
        stop = self._heart = threading.Event()

        def beat() -> None:
            while not stop.wait(every_s):
                with self._lock:
                    if stop.is_set():
                        return
                    self.data["heartbeat_at"] = _now()
                    self.write()

        threading.Thread(target=beat, name="ablate-heartbeat", daemon=True).start()

    def finish(self, status: str, error: str | None = None) -> None:
        assert status in STATUSES, status
        with self._lock:
            if self._heart is not None:
                self._heart.set()
            self.data.update(status=status, error=error, wall_time_s=round(time.time() - self.started, 3))
            self.data["heartbeat_at"] = _now()
            self.write()

    def write(self) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unique per process and thread: two writers never share (or delete) each other's temp file.
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                tmp.write_text(json.dumps(self.data, indent=2, sort_keys=False, default=str) + "\n")
                os.replace(tmp, self.path)
            finally:
                tmp.unlink(missing_ok=True)


def slurm_job_id() -> str | None:
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array is not None:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID")


def load_results(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
