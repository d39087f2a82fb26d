#!/usr/bin/env bash
# The CPU-scale SWA comparison (issue 18 design): SGD at budget B = 40 epochs vs SWA at B and at 1.5 B, 8 seeds
# each, paired by seed. Rerunning it continues an interrupted sweep. Table and verdict: README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2,3,4,5,6,7}
$PY train.py -m experiment=swa_cpu ensemble=none seed=$SEEDS "$@"
$PY train.py -m experiment=swa_cpu ensemble=swa ensemble.swa_start=0.6 ensemble.swa_lr=0.01 seed=$SEEDS \
  'hydra.sweep.dir=${paths.log_dir}/multiruns/swa_cpu_swa' "$@"
$PY train.py -m experiment=swa_cpu ensemble=swa ensemble.swa_start=24 ensemble.swa_lr=0.01 trainer.max_epochs=60 \
  seed=$SEEDS 'hydra.sweep.dir=${paths.log_dir}/multiruns/swa_cpu_swa_1.5b' "$@"
