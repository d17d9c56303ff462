#!/usr/bin/env bash
# Stage what bench/gpu_matrix.py needs on a bare GPU machine that has python3 + PyTorch but no ComfyUI (a rented
# box, or this project's device machines: nothing can be downloaded there). Writes, inside this repo (git-ignored):
#   .gpu/ComfyUI  a copy of a ComfyUI checkout's source (no .git, venv, tests, models or outputs)
#   .gpu/site     the pure-Python packages ComfyUI imports that such an image may lack, copied from that checkout's
#                 venv: torchsde, trampoline, comfy_aimdo (abi3), and comfy_kitchen WITHOUT its compiled kernels
#                 (they are built for one Python; its eager PyTorch backend remains, so ComfyUI 0.33 runs — say so
#                 next to any number measured this way)
# Then, on the GPU machine, from the repo root:
#   PYTHONPATH=.gpu/site python3 bench/gpu_matrix.py --comfyui .gpu/ComfyUI --json-out gpu_matrix.json
# Usage: bash bench/gpu_device_prep.sh [COMFYUI_CHECKOUT] (default $COMFYUI_PATH). About 30 MB.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="${1:-${COMFYUI_PATH:-}}"
if [ -z "$SRC" ] || [ ! -f "$SRC/comfy/model_patcher.py" ]; then
  echo "gpu_device_prep: give a ComfyUI checkout (argument or COMFYUI_PATH); '$SRC' is not one." >&2
  exit 2
fi
DEST="$REPO/.gpu"
rm -rf "$DEST"
mkdir -p "$DEST/ComfyUI" "$DEST/site"
tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./venv --exclude=./tests --exclude=./tests-unit \
    --exclude=./models --exclude=./output --exclude=./input --exclude=./temp --exclude=./user \
    --exclude=./custom_nodes --exclude='__pycache__' -cf - . | tar -C "$DEST/ComfyUI" -xf -
mkdir -p "$DEST/ComfyUI/custom_nodes" "$DEST/ComfyUI/models"

SITE="$(ls -d "$SRC"/.venv/lib/python3*/site-packages 2>/dev/null | head -1 || true)"
for pkg in torchsde trampoline comfy_aimdo comfy_kitchen; do
  if [ -n "$SITE" ] && [ -d "$SITE/$pkg" ]; then
    cp -r "$SITE/$pkg" "$DEST/site/"
  else
    echo "gpu_device_prep: $pkg not found in ${SITE:-<no venv>}: the GPU machine must have it (ComfyUI 0.33 imports it)." >&2
  fi
done
# compiled extensions are tied to the Python they were built for; comfy_aimdo's are plain shared objects (abi3)
find "$DEST/site/comfy_kitchen" -name '*.so' -delete 2>/dev/null || true
find "$DEST" -name '__pycache__' -prune -exec rm -rf {} +
grep -qxF '.gpu/' "$REPO/.gitignore" 2>/dev/null || echo "gpu_device_prep: note: .gpu/ is not in .gitignore" >&2
echo "staged $(du -sh "$DEST" | cut -f1) in $DEST (ComfyUI $(cd "$DEST/ComfyUI" && python3 -c 'import comfyui_version; print(comfyui_version.__version__)' 2>/dev/null || echo '?'))"
