"""Metric direction: the one place that knows, for every metric ablate writes, whether lower is better.

The sweeper's objective and pruner, checkpoint "best", early stopping, plateau schedulers, top-k member selection and
the table's better/worse wording all ask :func:`lower_is_better` (or :func:`mode` / :func:`direction`). Nothing guesses
from a name: a metric that is not in the registry is a :class:`ConfigError` naming the known ones.

A metric name is ``<stage>/<base>[_<variant>][_best]``:

- stage: ``train``, ``val`` or ``test``;
- base: a row of :data:`BASES` (``acc``, ``loss``, ``nll``, ...);
- variant: the averaged or ensembled model it was measured on (``ema``, ``swa``, ``snapshot_ens``, ``snapshot_ens3``,
  ``snapshot2``, ``mc``, ``tta``, ``single_pass``, ``eval``: ``train/acc_eval`` is the final weights in eval mode);
- ``_best``: the best value so far over epochs (``val/acc_best``, ``val/loss_best``), same direction as its base.

Plus the table's derived ``gap`` and ``val_gap`` (train - test / validation accuracy: smaller is better). This
module imports no torch.
"""

from __future__ import annotations

import re
from typing import Literal

from ablate.errors import ConfigError

STAGES = ("train", "val", "test")
# base -> lower is better. Accuracies (top-1, top-5) higher; loss, NLL, ECE and error rates lower.
BASES: dict[str, bool] = {
    "acc": False,
    "acc_top5": False,
    "loss": True,
    "nll": True,
    "ece": True,
    "error": True,
    "err": True,
}
# Which model a metric was measured on: EMA/SWA averages, snapshot k (1-based), the ensemble of the last m snapshots
# (no m: the configured members), MC dropout, flip TTA, one stochastic pass of a test-time-averaged model, and the
# final weights in eval mode (``train/acc_eval``: the training split scored as validation is).
VARIANT_PATTERN = r"ema|swa|snapshot\d+|snapshot_ens\d*|mc|tta|single_pass|eval"
VARIANTS_SHOWN = "ema|swa|snapshot<k>|snapshot_ens[<m>]|mc|tta|single_pass|eval"
# The table's derived gaps (ablate.report.runs.Run.metric): gap = train/acc_eval - test/acc (train/acc for runs
# recorded before train/acc_eval), val_gap = train/acc_eval - val/acc (the overfitting gate's, no test data).
DERIVED: dict[str, bool] = {"gap": True, "val_gap": True}

_BASE_PATTERN = "|".join(sorted((re.escape(b) for b in BASES), key=len, reverse=True))
_NAME = re.compile(
    rf"^(?P<stage>{'|'.join(STAGES)})/(?P<base>{_BASE_PATTERN})"
    rf"(?:_(?P<variant>{VARIANT_PATTERN}))?(?P<best>_best)?$"
)

EXAMPLES = (
    "val/acc",
    "val/loss",
    "val/acc_best",
    "val/loss_best",
    "val/acc_ema",
    "val/nll_ema",
    "test/ece",
    "val/acc_snapshot_ens3",
)


def is_known(metric: str) -> bool:
    return str(metric) in DERIVED or _NAME.match(str(metric)) is not None


def parse(metric: str) -> tuple[str, str, str | None, bool]:
    """``val/nll_ema_best`` -> ``("val", "nll", "ema", True)``; an unknown name is a ConfigError."""
    match = _NAME.match(str(metric))
    if match is None:
        raise ConfigError(
            f"unknown metric {metric!r}: ablate knows <stage>/<base>[_<variant>][_best] with stage "
            f"{'|'.join(STAGES)}, base {'|'.join(BASES)}, variant {VARIANTS_SHOWN}"
            f" (e.g. {', '.join(EXAMPLES[:5])})"
        )
    return match["stage"], match["base"], match["variant"], bool(match["best"])


def lower_is_better(metric: str) -> bool:
    """True for losses, NLL, ECE, error rates and the train-test gap; False for accuracies. Unknown: ConfigError."""
    if str(metric) in DERIVED:
        return DERIVED[str(metric)]
    return BASES[parse(metric)[1]]


def mode(metric: str) -> Literal["min", "max"]:
    """Lightning's spelling (ModelCheckpoint, EarlyStopping, ReduceLROnPlateau)."""
    return "min" if lower_is_better(metric) else "max"


def direction(metric: str) -> Literal["minimize", "maximize"]:
    """Optuna's spelling."""
    return "minimize" if lower_is_better(metric) else "maximize"


# -- what a training recipe writes ------------------------------------------------------------------------------
# The module logs these after every validation epoch (so checkpoints, early stopping, plateau schedules and the
# pruner can watch them); ``_best`` is the best value so far.
PER_EPOCH_VAL = ("val/loss", "val/acc", "val/acc_best", "val/loss_best")
# Averages scored on every validation epoch as well (ablate.training.ensembles.averaging: EMA's ``log_per_epoch``).
PER_EPOCH_VARIANTS = {"ema": ("val/loss_ema", "val/acc_ema", "val/acc_ema_best")}
# ablate.training.ensembles.ensemble_metrics scores each collected model once after training, with evaluation's
# classification_metrics (acc, nll, ece; acc_top5 only with more than 5 classes).
_END_OF_RUN_BASES = ("acc", "nll", "ece", "acc_top5")
END_OF_RUN_VARIANTS = {"ema": ("ema",), "swa": ("swa",), "snapshot": ("snapshot_ens",), "nocycle": ("snapshot_ens",)}


def recipe_val_metrics(ensemble: str = "none", cycles: int | None = None) -> tuple[list[str], list[str]]:
    """(per-epoch, end-of-run) validation metrics that a run with ``ensemble`` writes to results.json.

    Per-epoch ones can be monitored (checkpoint, early stopping, pruning); end-of-run ones only be optimized.
    ``cycles``: a snapshot ensemble's M, for its per-snapshot and ensemble-size curves (``val/acc_snapshot<k>``,
    ``val/acc_snapshot_ens<m>``).
    """
    per_epoch = [*PER_EPOCH_VAL, *PER_EPOCH_VARIANTS.get(ensemble, ())]
    end: list[str] = []
    for variant in END_OF_RUN_VARIANTS.get(ensemble, ()):
        end += [f"val/{base}_{variant}" for base in _END_OF_RUN_BASES if f"val/{base}_{variant}" not in per_epoch]
    if ensemble in ("snapshot", "nocycle") and cycles:
        end += [f"val/acc_snapshot{k}" for k in range(1, int(cycles) + 1)]
        end += [f"val/acc_snapshot_ens{m}" for m in range(1, int(cycles) + 1)]
    return per_epoch, end
