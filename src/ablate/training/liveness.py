"""Whether a process of this host still lives: the one test behind "is that writer gone?".

Used by the checkpoint files (``checkpoint_io``: a killed writer's ``.tmp`` files), results.json (a ``running`` record
whose process died) and the Optuna sweeper (trials a killed sweeper left RUNNING). Imports no torch, so the
torch-free readers (``ablate.runtime.results``, the table command, the sweeper) may use it.
"""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True when ``pid`` names a live process on this host (signal 0 delivers nothing; it only checks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
