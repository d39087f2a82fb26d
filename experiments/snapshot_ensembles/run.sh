#!/usr/bin/env bash
# The CPU-scale Table 1 comparison (issue 18 design): single model vs snapshot ensemble (alpha0 = 0.2, M = 5 cycles
# of 20 epochs, B = 100), 5 seeds each, paired by seed.
# Rerunning it continues an interrupted sweep. Table and verdict: README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2,3,4}
$PY train.py -m experiment=snapshot_ensembles_cpu ensemble=none seed=$SEEDS "$@"
$PY train.py -m experiment=snapshot_ensembles_cpu ensemble=snapshot scheduler=snapshot optimizer.lr=0.2 seed=$SEEDS \
  'hydra.sweep.dir=${paths.log_dir}/multiruns/snapshot_ensembles_cpu_100ep_snapshot' "$@"
