"""Console hygiene: silence Lightning's messages that say nothing about an ablate run, once per process.

Each is irrelevant here, and a sweep printed them once per job:
- the litlogger advertisement ("Tip: ... try installing litlogger"), logged on every Trainer creation;
- torch's pytree deprecation warning, raised inside Lightning's own code (not ours to fix);
- "number of training batches is smaller than the logging interval": the module logs once per epoch anyway.

"""

from __future__ import annotations

import logging
import warnings

_WARNINGS = (
    ".*isinstance\\(treespec, LeafSpec\\).*",
    ".*is smaller than the logging interval.*",
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def quiet_lightning() -> None:
    for pattern in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
