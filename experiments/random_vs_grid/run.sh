#!/usr/bin/env bash
# Random vs grid search (Bergstra & Bengio 2012) at CPU scale: 27 trials per search, SEEDS search seeds per sampler
# (default 0..9), one search after another, 1 torch thread. Search seed s gives both samplers the training seed
# seed=s (every trial of the search) and seeds the sampler: hydra.sweeper.seed=s for the random draws (and the order in
# which the grid is visited), and the grid's random offset (space.py grid --seed s). The space is in space.py.
# Studies land in logs/searches/rvg-offset-<sampler>-s<seed>/ (running this again resumes them: a finished study costs
# a few seconds). Then: python experiments/random_vs_grid/analyse.py
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=(${PYTHON:-python})
export OMP_NUM_THREADS=1
# A search whose trials diverged (plain SGD at a large lr) ends with exit code 1 (train.py's sweep rule: "a job did
# not complete"); those trials are FAIL in the study and count as spent budget. Go on after 1, stop on anything else.
search() { "${PY[@]}" train.py -m "$@" || [ $? -eq 1 ]; }
COMMON=(experiment=random_vs_grid_cpu hydra.sweeper.n_trials=27 torch_threads=1)
for s in ${SEEDS:-0 1 2 3 4 5 6 7 8 9}; do
  for sampler in random grid; do
    mapfile -t space < <("${PY[@]}" experiments/random_vs_grid/space.py "$sampler" --seed "$s")
    search hparams_search=$sampler "${COMMON[@]}" seed=$s hydra.sweeper.seed=$s \
      hydra.sweeper.study_name=rvg-offset-$sampler-s$s "${space[@]}"
  done
done
