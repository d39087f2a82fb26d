#!/usr/bin/env bash
# The CPU-scale Table 9 sweep (issue 18 design): 4 rows x 4 seeds, 120 epochs, 2 jobs at a time with 1 thread each.
# Rerunning it continues an interrupted sweep. Then: the table with the verdict (experiments/dropout/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
$PY train.py -m experiment=dropout_cpu 'reg=[l2],[dropout,input_dropout,l2]' seed=0,1,2,3 "$@"
$PY train.py -m experiment=dropout_cpu 'reg=[dropout,input_dropout,max_norm],[max_norm]' reg.max_norm=2.0 \
  seed=0,1,2,3 'hydra.sweep.dir=${paths.log_dir}/multiruns/dropout_cpu_maxnorm' "$@"
