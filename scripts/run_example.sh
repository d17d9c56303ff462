#!/usr/bin/env bash
# The main job (README): install what is missing, then run an example DreamO workflow in a real ComfyUI: the one
# this clone sits in (<ComfyUI>/custom_nodes/<clone>), else COMFYUI_PATH, else ~/comfyui (scripts/install_deps.sh),
# with that ComfyUI's Python. Arguments go to scripts/run_example.py (--help).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DREAMO_ONE_CHECKOUT=1 source "$REPO/scripts/install_deps.sh" || exit 1
read -r checkout py version <<< "$DREAMO_RELEASES"
if [ -z "${checkout:-}" ]; then
  echo "The example needs ComfyUI: run this from <ComfyUI>/custom_nodes/comfyui-dreamo, or set COMFYUI_PATH" \
       "(README: 'Install'). Nothing was installed." >&2
  exit 1
fi
echo "Using ComfyUI $version at $checkout ($py)"
COMFYUI_PATH="$checkout" exec "$py" "$REPO/scripts/run_example.py" "$@"
