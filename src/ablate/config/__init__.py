"""Stage 1, config: what a run may be asked to do, checked once before anything heavy starts.

Owns the typed config nodes (``schema``), the rule book (``rules``: every value and cross-option rule of every entry
point), the metric names and their directions (``metric_registry``), and the few checks that need the built objects
(``object_checks``: run length, optimizer stepping). May import: ``ablate.errors``, the libraries (``optim`` for
scheduler lengths), and nothing from build, training, runtime, evaluation or report. ``rules``, ``schema`` and
``metric_registry`` import no torch (config errors answer in well under a second).
"""
