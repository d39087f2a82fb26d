"""Stage 2, build: a checked config -> the objects a run needs (data module, model, LightningModule, callbacks,
trainer arguments), for train.py, evaluate.py and the benchmarks alike.

May import: config, training (the classes it instantiates) and the libraries (data, models, layers, optim). Never
runtime, evaluation or report: building knows nothing of run folders, results files or sweeps.
"""
