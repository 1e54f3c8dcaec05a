#!/usr/bin/env bash
# Fill .gpu-carry/ (git-ignored through .git/info/exclude) with what the GPU machine lacks for
# `python -m benchmarks.gpu_check`: the plain reference script and the bitsandbytes wheel (~42 MB;
# x86-64, Python 3.12, CUDA 13 build included). Its torch, transformers, peft, numpy, pandas,
# tokenizers and safetensors are already there. Run from the repository root, where pip reaches PyPI.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.gpu-carry/' .git/info/exclude 2>/dev/null || echo '/.gpu-carry/' >> .git/info/exclude
mkdir -p .gpu-carry
reference="${1:-../shared/gpu-reference/plain_reference.py}"
cp "$reference" .gpu-carry/plain_reference.py
PY="${PYTHON:-.venv/bin/python}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  -d .gpu-carry bitsandbytes==0.50.2
du -sh .gpu-carry
