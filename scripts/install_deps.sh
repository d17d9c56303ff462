#!/usr/bin/env bash
# Install what the pack, its tests and the example need; quick when everything is already there.
# Sourced by scripts/test.sh (with DREAMO_TEST_DEPS=1) and scripts/run_example.sh. Exports COMFYUI_PATH when a ComfyUI checkout is found.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v -e "Running pip as the 'root' user" -e "^WARNING: Location" || true; }

# torch + torchvision (ComfyUI and facexlib import both): the PyPI builds run on a CPU too.
if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "installing torch and torchvision"
  pip_install "torch==2.14.1" "torchvision==0.29.1"
fi
# The pack's runtime dependencies and the server runner's (extra "runner"), plus the test extra when
# DREAMO_TEST_DEPS=1 (scripts/test.sh sets it), as pyproject.toml declares them.
"$PY" - "$REPO/pyproject.toml" "${DREAMO_TEST_DEPS:-0}" > "${TMPDIR:-/tmp}/dreamo-requirements.txt" <<'PYEOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
wanted = project["dependencies"] + extras["runner"] + (extras["test"] if sys.argv[2] == "1" else [])
print("\n".join(d for d in wanted if not d.startswith("torch")))
PYEOF
pip_install -r "${TMPDIR:-/tmp}/dreamo-requirements.txt"

# A real ComfyUI checkout (not on PyPI). Use $COMFYUI_PATH, else ~/comfyui; export one from a local git
# snapshot (COMFYUI_GIT_DIR) with the workplace's checkout tool when none exists yet.
COMFYUI_PATH="${COMFYUI_PATH:-$HOME/comfyui}"
if [ ! -f "$COMFYUI_PATH/main.py" ]; then
  GIT_DIR_CANDIDATE="${COMFYUI_GIT_DIR:-/work/.mirror/Comfy-Org+ComfyUI/repo}"
  TOOL="$REPO/../shared/tools/comfyui-checkout"
  if [ -d "$GIT_DIR_CANDIDATE" ] && [ -x "$TOOL" ]; then
    PYTHON="$PY" "$TOOL" "$GIT_DIR_CANDIDATE" "$COMFYUI_PATH" >/dev/null || true
  fi
fi
if [ -f "$COMFYUI_PATH/main.py" ]; then
  if ! "$PY" -c "import aiohttp, torchsde, av, alembic, sqlalchemy, comfyui_frontend_package, spandrel" >/dev/null 2>&1; then
    echo "installing ComfyUI's requirements"
    grep -v -e '^torch' -e '^#' -e '^$' "$COMFYUI_PATH/requirements.txt" > "${TMPDIR:-/tmp}/comfyui-requirements.txt"
    pip_install -r "${TMPDIR:-/tmp}/comfyui-requirements.txt" torchsde requests
  fi
  # A torchaudio that does not match torch aborts ComfyUI's imports; ComfyUI runs without it.
  if "$PY" -m pip show -q torchaudio >/dev/null 2>&1 && ! "$PY" -c "import torchaudio" >/dev/null 2>&1; then
    "$PY" -m pip uninstall -y -q torchaudio
  fi
  export COMFYUI_PATH
else
  echo "No ComfyUI checkout at $COMFYUI_PATH: host tests will be skipped (README: 'Getting ComfyUI')."
  unset COMFYUI_PATH
fi
