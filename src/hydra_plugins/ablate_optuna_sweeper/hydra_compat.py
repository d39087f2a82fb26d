"""A finished Hydra job's return value or error, read without side effects.

``JobReturn.return_value`` (public) raises a failed job's exception after writing "Error executing job with
overrides ..." to stderr; the sweeper only wants the value, or the exception's repr for its one-line trial summary.
On the Hydra versions in ``TESTED`` (requirements.lock; pyproject's range) it reads the stored ``_return_value``;
on any other it goes through the public property (one extra stderr line per failed job) and says so once.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra

TESTED = ((1, 3, 8), (1, 4))  # [from, to)


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


FAST = TESTED[0] <= _release(hydra.__version__) < TESTED[1]
if not FAST:
    logging.getLogger("ablate").warning(
        "hydra-core %s is outside the tested range 1.3.8 to <1.4: the sweeper reads job results through "
        "JobReturn.return_value (failed jobs print one extra stderr line)",
        hydra.__version__,
    )


def job_value(ret: Any) -> Any:
    """A completed job's return value; None for any other status."""
    return ret.return_value if ret.status.name == "COMPLETED" else None


def job_error(ret: Any) -> str:
    """repr of a failed job's exception."""
    if FAST:
        return repr(ret._return_value)
    try:
        return repr(ret.return_value)
    except Exception as err:  # a failed job's property raises what the job raised
        return repr(err)
