#!/usr/bin/env bash
# Creates the optional PyTorch environment for the comparison benchmarks (never a jebm dependency).
#
# Usage: bash benchmarks/setup_torch_env.sh [VENV_DIR]   (default: benchmarks/.torch-venv)
#
# torch is pinned to 2.13.0: on this machine that resolves to the CPU wheel on disk, whereas a plain
# `torch` would pull a multi-GB CUDA build. torchebm is installed with --no-deps after torch so pip
# cannot replace that torch (torchebm's only runtime requirement is torch itself).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-${here}/.torch-venv}"
python="${PYTHON:-python3}"

if [[ ! -x "${venv}/bin/python" ]]; then
  "${python}" -m venv "${venv}"
fi
pip=("${venv}/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" "torch==2.13.0" numpy
"${pip[@]}" --no-deps "torchebm==0.8.9"
"${venv}/bin/python" - <<'PY'
import torch, torchebm
print(f"torch {torch.__version__}, torchebm {getattr(torchebm, '__version__', '?')}, "
      f"threads {torch.get_num_threads()}")
PY
