#!/usr/bin/env bash
# The main job: set up a virtual environment, train the default EBM (conditional, on scikit-learn's
# 8x8 digits, embedded: nothing to download but pip packages), then sample and evaluate it.
# Writes workdirs/default/{checkpoints,samples,eval/report.json}. Extra flags go to the trainer.
set -euo pipefail
cd "$(dirname "$0")"
WORKDIR="${WORKDIR:-workdirs/default}"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
.venv/bin/python -m experiments.train --preset=default --workdir="$WORKDIR" "$@"
.venv/bin/python -m experiments.sample --workdir="$WORKDIR" --num_samples=10
.venv/bin/python -m experiments.evaluate --workdir="$WORKDIR"
echo "Done: samples in $WORKDIR/samples, report in $WORKDIR/eval/report.json"
