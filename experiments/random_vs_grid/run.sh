#!/usr/bin/env bash
# Random vs grid search (Bergstra & Bengio 2012) at CPU scale: 27 trials each, 5 search seeds each, run one after
# another. Search seed s sets the sampler seed (random draws / grid order) and the training seed of every trial.
# Studies land in logs/searches/rvg-<sampler>-s<seed>/; then: python experiments/random_vs_grid/analyse.py
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
COMMON=(data=digits model=mlp trainer.max_epochs=5 hydra.sweeper.n_trials=27)
for s in 0 1 2 3 4; do
  # Random: the default space of configs/hparams_search/random.yaml, spelled out.
  $PY train.py -m hparams_search=random "${COMMON[@]}" seed=$s hydra.sweeper.seed=$s \
    hydra.sweeper.study_name=rvg-random-s$s \
    'optimizer.lr=tag(log, interval(1e-4, 1e-1))' \
    'optimizer.weight_decay=tag(log, interval(1e-6, 1e-1))' \
    'reg.dropout=interval(0.0, 0.6)'
  # Grid: 3 values per dimension at the centres of three equal cells of the same ranges (log scale for lr and wd).
  $PY train.py -m hparams_search=grid "${COMMON[@]}" seed=$s hydra.sweeper.seed=$s \
    hydra.sweeper.study_name=rvg-grid-s$s \
    'optimizer.lr=choice(3.16e-4, 3.16e-3, 3.16e-2)' \
    'optimizer.weight_decay=choice(6.8e-6, 3.16e-4, 1.47e-2)' \
    'reg.dropout=choice(0.1, 0.3, 0.5)'
done
