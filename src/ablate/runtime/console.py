"""Console hygiene: silence Lightning's messages that say nothing about an ablate run, once per process.

Each is irrelevant here, and a sweep printed them once per job:
- the litlogger advertisement ("Tip: ... try installing litlogger"), logged on every Trainer creation;
- torch's pytree deprecation warning, raised inside Lightning's own code (not ours to fix);
- "number of training batches is smaller than the logging interval": the module logs once per epoch anyway;
- "Trainer already configured with model summary callbacks": ours (callbacks.RichModelSummary) is on purpose.

In a multirun, a job says one line when it ends (run.py): ``quiet_job`` also turns off Lightning's INFO lines (GPU
available, checkpoint restored, fit stopped; 6 per job), and run.py leaves out the progress bar and model summary.
Lightning's warnings still show.
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


def quiet_job() -> None:
    """Lightning's INFO lines off for the rest of this process (a multirun job's); its warnings still print."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
