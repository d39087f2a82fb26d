"""Hydra sweeper that drives current Optuna (3.x/4.x): ``hydra/sweeper=ablate_optuna``, used by ``hparams_search=``.

Lives in the ``hydra_plugins`` namespace package so Hydra discovers it; imports no Optuna until a sweep starts.
"""
