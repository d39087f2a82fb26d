"""Stage 3, training: what runs inside ``Trainer.fit`` and ``Trainer.test``.

Owns the LightningModule (``module``: loss, its own optimizer step, per-epoch statistics), its on-device step
counters (``step_metrics``), the per-step regularizers (``regularization``), whole-split scoring with torchmetrics
(``scoring``), the callbacks (``callbacks``) and the in-run ensembles and weight averages (``ensembles``: snapshot,
EMA, SWA). May import: config and the libraries. Never build, runtime, evaluation or report.
"""
