"""Stage 1, config: what a run may be asked to do, checked once before anything heavy starts.

Owns the typed config nodes (``schema``), the rule book (``rules``: every value and cross-option rule of every entry
point, ``optimized_metric`` included) and the metric names and their directions (``metric_registry``). The few checks
that need built objects (run length, the optimizer built on a throwaway copy) live in ``ablate.build.object_checks``.
May import: ``ablate.errors`` and nothing from build, training, runtime, evaluation or report. The whole stage imports
no torch (config errors answer in well under a second).
"""
