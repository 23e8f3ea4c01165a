#!/usr/bin/env bash
# A virtualenv with the pinned reference packages of scripts/compare.sh:
#
#   scripts/reference/setup.sh [--torch] [VENV]      (VENV default: .venv-reference)
#
# NumPy and SciPy always (what CI's smoke check needs); PyTorch only with --torch: PyPI's Linux
# wheel pulls gigabytes of CUDA libraries. Prints the python to use: PYTHON=... scripts/compare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
torch=0
if [ "${1:-}" = "--torch" ]; then torch=1; shift; fi
venv=${1:-.venv-reference}
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q numpy==2.4.6 scipy==1.17.1
if [ "$torch" = 1 ]; then
  "$venv/bin/python" -m pip install -q torch==2.15.0
fi
"$venv/bin/python" -c 'import numpy, scipy; print("numpy", numpy.__version__, "scipy", scipy.__version__)' >&2
echo "$venv/bin/python"
