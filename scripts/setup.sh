#!/usr/bin/env bash
# Create .venv and install rlhf-assets with its test tools. Idempotent; needs only the package registry.
# torch==2.13.0 is installed first, on its own, so pip takes the CPU wheel and never pulls CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test]"
