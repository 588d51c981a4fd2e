#!/usr/bin/env bash
# The pack inside a real ComfyUI and its web frontend (headless Debian chromium + playwright):
# installs chromium with apt-get when missing, builds the ComfyUI env from ../shared when
# COMFYUI_DIR / COMFYUI_PYTHON are not given, then runs tests/integration.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium
fi
bash scripts/setup.sh
SHARED=${LP_SHARED_DIR:-../shared}
if [ -z "${COMFYUI_DIR:-}" ] && [ -f "$SHARED/tools/comfyui_env.sh" ]; then
  eval "$(bash "$SHARED/tools/comfyui_env.sh" "${LP_COMFYUI_CACHE:-/tmp/lp-comfyui}" | grep '^COMFYUI_')"
  export COMFYUI_DIR COMFYUI_PYTHON
fi
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv/bin/python -m pytest -q -p no:cacheprovider tests/integration "$@"
