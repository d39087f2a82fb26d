"""Stage 5, evaluation: finished runs, scored again and ensembled (``evaluate.py``).

``saved_runs`` rebuilds members from their checkpoints and scores them (MC dropout, TTA, ensembles), ``members``
selects them on validation (top-k of a sweep, one setting, ties), ``ensemble_report`` writes results.md and the
ensemble-size curve. May import everything below it (config, build, training, runtime's checkpoint and results
files, report's run loader) and the libraries; nothing imports evaluation.
"""
