"""Stage 3, training: what runs inside ``Trainer.fit`` and ``Trainer.test``.

Owns the LightningModule (``module``: loss, its own optimizer step, per-epoch statistics; built from four frozen
groups in ``module_config``: Network, Stepping, Objective, Evaluation; its optimizer and
schedule in ``configure_optimizers``, its mid-epoch checkpoint state in ``mid_epoch``), its on-device step counters
(``step_metrics``), the per-step regularizers (``regularization``), whole-split scoring with torchmetrics and the one
"average R stochastic passes" (``scoring``), the callbacks (``callbacks``), the in-run ensembles and weight averages
(``ensembles``: snapshot, EMA, SWA) and checkpoint files (``checkpoint_io``: atomic writes, checksums, which weights a
run tests). Every use of Lightning's private names is in ``lightning_fast``, behind its version check.
May import: config and the libraries. Never build, runtime, evaluation or report.
"""
