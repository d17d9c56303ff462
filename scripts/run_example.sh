#!/usr/bin/env bash
# The main job (README): install what is missing, then run an example DreamO workflow in a real ComfyUI
# (the first checkout found: COMFYUI_PATH, else COMFYUI_LATEST_PATH), with that checkout's venv.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/install_deps.sh" || exit 1
read -r checkout py version <<< "$DREAMO_RELEASES"
if [ -z "${checkout:-}" ]; then
  echo "The example needs a ComfyUI checkout: set COMFYUI_PATH (README: 'Getting ComfyUI')." >&2
  exit 1
fi
echo "Using ComfyUI $version at $checkout"
COMFYUI_PATH="$checkout" exec "$py" "$REPO/scripts/run_example.py" "$@"
