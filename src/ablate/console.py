"""Console hygiene: silence Lightning's messages that say nothing about an ablate run, once per process.

Each is irrelevant here, and a sweep printed them once per job:
- the litlogger advertisement ("Tip: ... try installing litlogger"), logged on every Trainer creation;
- torch's pytree deprecation warning, raised inside Lightning's own code (not ours to fix);
- "number of training batches is smaller than the logging interval": the module logs once per epoch anyway;
- "Trainer already configured with model summary callbacks": ours (callbacks.RichModelSummary) is on purpose.

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
        message = str(record.msg)
        return "litlogger" not in message and "already configured with model summary" not in message


def quiet_lightning() -> None:
    for pattern in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
