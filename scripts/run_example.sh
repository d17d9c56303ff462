#!/usr/bin/env bash
# The main job (README): install what is missing, then run an example DreamO workflow in a real ComfyUI.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/install_deps.sh" || exit 1
if [ -z "${COMFYUI_PATH:-}" ]; then
  echo "The example needs a ComfyUI checkout: set COMFYUI_PATH (README: 'Getting ComfyUI')." >&2
  exit 1
fi
exec "${PYTHON:-python3}" "$REPO/scripts/run_example.py" "$@"
