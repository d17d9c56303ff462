#!/usr/bin/env bash
# Install what the pack, its tests and the main job need, saying what goes where first; quick when all is there.
# Sourced by scripts/test.sh (DREAMO_TEST_DEPS=1) and scripts/run_example.sh. Afterwards DREAMO_RELEASES holds one
# line per ComfyUI checkout found: "<checkout> <python of its venv> <ComfyUI version>".
#
# Variables (README, "Getting ComfyUI"):
#   COMFYUI_PATH         a ComfyUI checkout (default ~/comfyui; cloned from GitHub at the oldest supported
#                        release when neither it nor COMFYUI_GIT_DIR exists)
#   COMFYUI_LATEST_PATH  a second checkout, tested too (default ~/comfyui-latest): CI tests the oldest supported
#                        release and the newest this way
#   COMFYUI_GIT_DIR, COMFYUI_LATEST_GIT_DIR
#                        a local git snapshot of ComfyUI to export into the checkout when it does not exist yet
#   COMFYUI_GGUF_PATH    city96's ComfyUI-GGUF pack, for the GGUF tests only (default ~/ComfyUI-GGUF; cloned at
#                        the tested commit when DREAMO_TEST_DEPS=1 and it is missing)
#   PYTHON               the base interpreter (default python3). Each checkout gets a venv, <checkout>/.venv, made
#                        with --system-site-packages so torch is installed once, in the base; ComfyUI's pinned
#                        frontend packages differ between releases and live in each venv.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=${PYTHON:-python3}
TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")  # what the suite passes on; the PyPI builds run on a CPU
pip_install() {
  "$1" -m pip install -q --disable-pip-version-check "${@:2}" 2>&1 \
    | grep -v -e "Running pip as the 'root' user" -e "^WARNING: Location" -e "^WARNING: Running pip" || true
}

echo "DreamO setup: base Python $(command -v "$PY") ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "  installing ${TORCH_PINS[*]} into that Python (PyPI builds, ~5.5 GB with their CUDA libraries; they run on a CPU too)"
  pip_install "$PY" "${TORCH_PINS[@]}"
fi

# The pack's own requirements, as pyproject.toml declares them (runtime + runner, + test with DREAMO_TEST_DEPS=1).
PACK_REQS="${TMPDIR:-/tmp}/dreamo-requirements-$$.txt"
"$PY" - "$REPO/pyproject.toml" "${DREAMO_TEST_DEPS:-0}" > "$PACK_REQS" <<'PYEOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
wanted = project["dependencies"] + extras["nodes"] + extras["runner"] + (extras["test"] if sys.argv[2] == "1" else [])
print("\n".join(d for d in wanted if not d.startswith("torch")))
PYEOF

export_snapshot() {  # git dir, destination: the snapshot's HEAD, blob by blob (large absent blobs are skipped)
  echo "  exporting ComfyUI from the git snapshot $1 into $2"
  mkdir -p "$2"
  git --git-dir="$1" ls-tree -r HEAD | while read -r _mode type sha path; do
    [ "$type" = blob ] || continue
    mkdir -p "$2/$(dirname "$path")"
    git --git-dir="$1" cat-file blob "$sha" > "$2/$path" 2>/dev/null || rm -f "$2/$path"
  done
}

COMFYUI_REPO="https://github.com/comfyanonymous/ComfyUI"
COMFYUI_FLOOR_TAG="v0.3.64"  # the oldest release the pack supports (dreamo_ops/host_version.py)

prepare_checkout() {  # checkout, git snapshot (may be empty), tag to clone when neither exists (may be empty)
  local checkout=$1 snapshot=$2
  if [ ! -f "$checkout/main.py" ] && [ -n "$snapshot" ] && [ -d "$snapshot" ]; then
    export_snapshot "$snapshot" "$checkout"
  elif [ ! -f "$checkout/main.py" ] && [ -n "${3:-}" ] && [ ! -e "$checkout" ] && command -v git >/dev/null 2>&1; then
    echo "  no ComfyUI at $checkout: cloning $COMFYUI_REPO at $3 there (set COMFYUI_PATH to use your own)"
    timeout 600 git clone -q --depth 1 --branch "$3" "$COMFYUI_REPO" "$checkout" 2>/dev/null \
      || { echo "  (the clone failed: no network to GitHub?)"; rm -rf "$checkout"; }
  fi
  [ -f "$checkout/main.py" ] && [ -f "$checkout/requirements.txt" ] || return 1
  local version venv="$checkout/.venv"
  version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$checkout/comfyui_version.py" 2>/dev/null || true)
  if [ ! -x "$venv/bin/python" ]; then
    echo "  creating the venv $venv for ComfyUI ${version:-?} (sees the base Python's packages)"
    "$PY" -m venv --system-site-packages "$venv"
  fi
  local reqs="$venv/.dreamo-requirements.txt" stamp="$venv/.dreamo-installed"
  { grep -v -e '^torch' -e '^#' -e '^$' "$checkout/requirements.txt"; echo torchsde; cat "$PACK_REQS"; } > "$reqs"
  if [ ! -f "$stamp" ] || ! cmp -s "$reqs" "$stamp"; then
    echo "  installing ComfyUI ${version:-?}'s requirements and the pack's into $venv"
    pip_install "$venv/bin/python" -r "$reqs"
    # 0.33 and newer import torchaudio at start-up; it must match the installed torch (2.11.1 imports with 2.14.1).
    if grep -q '^torchaudio' "$checkout/requirements.txt" && ! "$venv/bin/python" -c "import torchaudio" >/dev/null 2>&1; then
      echo "  installing torchaudio (no dependencies: torch stays as it is) into $venv"
      pip_install "$venv/bin/python" --no-deps "torchaudio==2.11.1"
    fi
    cp "$reqs" "$stamp"
  fi
  if ! "$venv/bin/python" -c "import torchaudio" >/dev/null 2>&1 && "$venv/bin/python" -m pip show -q torchaudio >/dev/null 2>&1; then
    echo "  note: torchaudio does not import with this torch; ComfyUI 0.3.x runs without it, 0.33+ does not" >&2
  fi
  DREAMO_RELEASES+="$checkout $venv/bin/python ${version:-unknown}"$'\n'
}

GGUF_PACK="${COMFYUI_GGUF_PATH:-$HOME/ComfyUI-GGUF}"
GGUF_PACK_COMMIT="795e45156ece99afbc3efef911e63fcb46e6a20d"  # the commit the GGUF tests ran on
if [ "${DREAMO_TEST_DEPS:-0}" = 1 ] && [ ! -f "$GGUF_PACK/nodes.py" ] && [ ! -e "$GGUF_PACK" ] && command -v git >/dev/null 2>&1; then
  echo "  cloning city96/ComfyUI-GGUF at $GGUF_PACK_COMMIT into $GGUF_PACK (GGUF tests only)"
  { git clone -q https://github.com/city96/ComfyUI-GGUF "$GGUF_PACK" 2>/dev/null && git -C "$GGUF_PACK" checkout -q "$GGUF_PACK_COMMIT"; } \
    || { echo "  (the clone failed: no network to GitHub? the GGUF tests will be skipped with the reason)"; rm -rf "$GGUF_PACK"; }
fi

DREAMO_RELEASES=""
prepare_checkout "${COMFYUI_PATH:-$HOME/comfyui}" "${COMFYUI_GIT_DIR:-}" "$COMFYUI_FLOOR_TAG" || true
prepare_checkout "${COMFYUI_LATEST_PATH:-$HOME/comfyui-latest}" "${COMFYUI_LATEST_GIT_DIR:-}" || true
if [ -z "$DREAMO_RELEASES" ]; then
  echo "  no ComfyUI checkout at ${COMFYUI_PATH:-$HOME/comfyui} or ${COMFYUI_LATEST_PATH:-$HOME/comfyui-latest}"
  echo "  (get one: git clone --branch v0.3.64 https://github.com/comfyanonymous/ComfyUI ~/comfyui; README 'Getting ComfyUI')"
  echo "  installing the pack's requirements into the base Python for the host-independent tests"
  pip_install "$PY" -r "$PACK_REQS"
fi
rm -f "$PACK_REQS"
export DREAMO_RELEASES
