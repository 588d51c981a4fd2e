#!/usr/bin/env bash
# Set up .venv (if needed) and run the test suite (library, CLI, nodes through the stand-in).
# The real-ComfyUI + Chromium tests are in tests/integration: run them with
#   bash scripts/test-integration.sh
# (they need ../shared/tools/comfyui_env.sh beside the clone, or COMFYUI_DIR + COMFYUI_PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv/bin/python -m pytest -q -p no:cacheprovider tests --ignore=tests/integration "$@"
