#!/usr/bin/env bash
# Random vs grid search (Bergstra & Bengio 2012) at CPU scale: 27 trials each, 5 search seeds each, run one after
# another. Search seed s sets the sampler seed (random draws / grid order) and the training seed of every trial.
# Studies land in logs/searches/<prefix>-<sampler>-s<seed>/ (running this again resumes them: finished ones cost a
# few seconds). Then: python experiments/random_vs_grid/analyse.py [--prefix rvg-sgd]
#   rvg:     AdamW + one-cycle (the defaults), lr in [1e-4, 1e-1]: the main setting.
#   rvg-sgd: plain SGD + one-cycle, lr in [1e-3, 10]: a narrow lr optimum (~0.6-1.5, divergence from ~2).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=(${PYTHON:-python})
# A search whose trials diverged (plain SGD at lr > ~2) still ends with exit code 1 (train.py's sweep rule: "a job did
# not complete"); those trials are FAIL in the study and count as spent budget. Go on after 1, stop on anything else.
search() { "${PY[@]}" train.py -m "$@" || [ $? -eq 1 ]; }
COMMON=(data=digits model=mlp trainer.max_epochs=5 hydra.sweeper.n_trials=27)
WD_DROPOUT_RANDOM=('optimizer.weight_decay=tag(log, interval(1e-6, 1e-1))' 'reg.dropout=interval(0.0, 0.6)')
# 3 values per dimension at the centres of three equal cells of the same ranges (log scale for lr and wd).
WD_DROPOUT_GRID=('optimizer.weight_decay=choice(6.8e-6, 3.16e-4, 1.47e-2)' 'reg.dropout=choice(0.1, 0.3, 0.5)')
for setting in ${SETTINGS:-rvg rvg-sgd}; do
  for s in ${SEEDS:-0 1 2 3 4}; do
    if [ "$setting" = rvg ]; then
      extra=()
      lr_random='optimizer.lr=tag(log, interval(1e-4, 1e-1))'
      lr_grid='optimizer.lr=choice(3.16e-4, 3.16e-3, 3.16e-2)'
    else
      extra=(optimizer=sgd)
      lr_random='optimizer.lr=tag(log, interval(1e-3, 10))'
      lr_grid='optimizer.lr=choice(4.64e-3, 0.1, 2.15)'
    fi
    search hparams_search=random "${COMMON[@]}" "${extra[@]}" seed=$s hydra.sweeper.seed=$s \
      hydra.sweeper.study_name=$setting-random-s$s "$lr_random" "${WD_DROPOUT_RANDOM[@]}"
    search hparams_search=grid "${COMMON[@]}" "${extra[@]}" seed=$s hydra.sweeper.seed=$s \
      hydra.sweeper.study_name=$setting-grid-s$s "$lr_grid" "${WD_DROPOUT_GRID[@]}"
  done
done
