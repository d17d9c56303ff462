#!/usr/bin/env bash
# Install what the pack, its tests and the main job need, saying what goes where first; quick when all is there.
# Sourced by scripts/test.sh (DREAMO_TEST_DEPS=1) and scripts/run_example.sh (DREAMO_ONE_CHECKOUT=1: the first
# checkout only). Afterwards DREAMO_RELEASES holds one line per ComfyUI checkout found:
# "<checkout> <its Python> <ComfyUI version>". Any pip failure stops the calling script with pip's message.
#
# Variables (README, "The two commands"):
#   COMFYUI_PATH         the ComfyUI to use. Default: the ComfyUI this clone sits in (<ComfyUI>/custom_nodes/<clone>,
#                        found as the doctor finds it), else ~/comfyui (cloned from GitHub at the oldest supported
#                        release when it does not exist, saying so first)
#   COMFYUI_LATEST_PATH  a second checkout, tested too (default ~/comfyui-latest, when it exists; tests only)
#   COMFYUI_GIT_DIR, COMFYUI_LATEST_GIT_DIR
#                        a local git snapshot of ComfyUI to export into the checkout when it does not exist yet
#   COMFYUI_GGUF_PATH    city96's ComfyUI-GGUF pack, for the GGUF tests only (default ~/ComfyUI-GGUF; cloned at
#                        the tested commit when DREAMO_TEST_DEPS=1 and it is missing)
#   PYTHON               the Python to use. When it is ComfyUI's own (a venv inside the checkout) the pack's
#                        requirements go into it. Any other Python is left as it is: the checkout gets a venv,
#                        <checkout>/.venv, that sees that Python's packages (a venv's too), so torch is never
#                        downloaded twice. Default: the checkout's own venv (<checkout>/.venv or <checkout>/venv)
#                        when there is one, else python3.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_PY=${PYTHON:-python3}
TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")  # what the suite passes on; the PyPI builds run on a CPU
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

pip_install() {  # python, pip arguments. pip's own output and progress bars are shown; a refusal stops here.
  local py=$1 errors rc=0
  shift
  errors=$(mktemp)
  "$py" -m pip install "$@" 2> "$errors" || rc=$?  # progress bars are on stdout, live; messages after
  cat "$errors" >&2
  if [ $rc -ne 0 ]; then
    if grep -q "externally-managed-environment" "$errors"; then
      cat >&2 <<MSG

Stopped: pip refused to install into $py because your system manages that Python (PEP 668,
"externally-managed-environment"). Nothing was changed. Fix: give the scripts a venv of your own, e.g.
    python3 -m venv ~/venvs/dreamo && PYTHON=~/venvs/dreamo/bin/python bash scripts/$(basename "$0")
or point COMFYUI_PATH at your ComfyUI (its own venv is then used).
MSG
    else
      echo "Stopped: pip failed (exit $rc) installing into $py; its message is above." >&2
    fi
    rm -f "$errors"
    exit 1
  fi
  rm -f "$errors"
}

python_prefix() { "$1" -c 'import sys; print(sys.prefix)'; }
real_dir() { (cd "$1" 2>/dev/null && pwd -P); }
inside() {  # folder, path: is path in folder?
  local f p
  f=$(real_dir "$1") && p=$(real_dir "$2") || return 1
  case "$p/" in "$f"/*) return 0 ;; esac
  return 1
}

# The pack's own requirements, as pyproject.toml declares them (runtime + runner, + test with DREAMO_TEST_DEPS=1).
pack_requirements() {
  "$1" - "$REPO/pyproject.toml" "${DREAMO_TEST_DEPS:-0}" <<'PYEOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
wanted = project["dependencies"] + extras["nodes"] + extras["runner"] + (extras["test"] if sys.argv[2] == "1" else [])
print("\n".join(d for d in wanted if not d.startswith("torch")))
PYEOF
}

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

# The first checkout: COMFYUI_PATH, else the ComfyUI this clone sits in (dreamo_cli's rule, the doctor's), else
# ~/comfyui. Only reads files: nothing is installed to answer it.
enclosing_comfyui() {
  "$BASE_PY" -c 'import sys; sys.path.insert(0, sys.argv[1])
from dreamo_cli.comfy_folders import default_root
print(default_root() or "")' "$REPO" 2>/dev/null || true
}

checkout_python() {  # checkout: the Python to run it with, making <checkout>/.venv when needed (see PYTHON above)
  local checkout=$1 venv="$1/.venv" own="" base_prefix site
  if [ -n "${PYTHON:-}" ]; then
    if inside "$checkout" "$(python_prefix "$PYTHON")"; then
      echo "  using ComfyUI's own Python $PYTHON; the pack's requirements go into it" >&2
      echo "$PYTHON"
      return
    fi
  else
    for own in "$checkout/.venv/bin/python" "$checkout/venv/bin/python"; do
      if [ -x "$own" ]; then
        echo "  using ComfyUI's own Python $own; the pack's requirements go into it" >&2
        echo "$own"
        return
      fi
    done
  fi
  if [ ! -x "$venv/bin/python" ]; then
    echo "  creating the venv $venv from $BASE_PY, seeing its packages (torch is not downloaded again)" >&2
    # Without a pip (and, before Python 3.12, a setuptools) of its own that would hide newer ones it sees.
    "$BASE_PY" -m venv --system-site-packages --without-pip "$venv" >&2
  fi
  # A venv's packages are not 'system site packages' of a venv made from it: name its site folders in a .pth.
  base_prefix=$("$BASE_PY" -c 'import sys; print(sys.prefix if sys.prefix != sys.base_prefix else "")')
  if [ -n "$base_prefix" ]; then
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$BASE_PY" -c 'import sys, sysconfig
paths = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
print("".join(f"import site; site.addsitedir({p!r})\n" for p in paths), end="")' > "$site/dreamo_base_venv.pth"
  fi
  if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "  $BASE_PY has no pip: adding one to $venv (ensurepip)" >&2
    "$venv/bin/python" -m ensurepip >&2
  fi
  echo "$venv/bin/python"
}

prepare_checkout() {  # checkout, git snapshot (may be empty), tag to clone when neither exists (may be empty)
  local checkout=$1 snapshot=$2 py prefix version reqs stamp
  if [ ! -f "$checkout/main.py" ] && [ -n "$snapshot" ] && [ -d "$snapshot" ]; then
    export_snapshot "$snapshot" "$checkout"
  elif [ ! -f "$checkout/main.py" ] && [ -n "${3:-}" ] && [ ! -e "$checkout" ] && command -v git >/dev/null 2>&1; then
    echo "  no ComfyUI at $checkout: cloning $COMFYUI_REPO at $3 there (set COMFYUI_PATH to use your own)"
    timeout 600 git clone -q --depth 1 --branch "$3" "$COMFYUI_REPO" "$checkout" 2>/dev/null \
      || { echo "  (the clone failed: no network to GitHub?)"; rm -rf "$checkout"; }
  fi
  [ -f "$checkout/main.py" ] && [ -f "$checkout/requirements.txt" ] || return 1
  version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$checkout/comfyui_version.py" 2>/dev/null || true)
  echo "  ComfyUI ${version:-?} at $checkout"
  py=$(checkout_python "$checkout") && [ -x "$py" ] || { echo "Stopped: no Python for $checkout (see above)." >&2; exit 1; }
  if ! "$py" -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "  installing ${TORCH_PINS[*]} into $py (PyPI builds: about 5.5 GB with their CUDA libraries; they run on a CPU too)"
    pip_install "$py" "${TORCH_PINS[@]}"
  fi
  prefix=$(python_prefix "$py")
  reqs=$(mktemp) stamp="$prefix/.dreamo-installed"
  { grep -v -e '^torch' -e '^#' -e '^$' "$checkout/requirements.txt"; echo torchsde; pack_requirements "$py"; } > "$reqs"
  if [ ! -f "$stamp" ] || ! cmp -s "$reqs" "$stamp"; then
    echo "  installing ComfyUI ${version:-?}'s requirements and the pack's into $py"
    pip_install "$py" -r "$reqs"
    # 0.33 and newer import torchaudio at start-up; it must match the installed torch (2.11.1 imports with 2.14.1).
    if grep -q '^torchaudio' "$checkout/requirements.txt" && ! "$py" -c "import torchaudio" >/dev/null 2>&1; then
      echo "  installing torchaudio (no dependencies: torch stays as it is) into $py"
      pip_install "$py" --no-deps "torchaudio==2.11.1"
    fi
    cp "$reqs" "$stamp"
  fi
  rm -f "$reqs"
  if ! "$py" -c "import torchaudio" >/dev/null 2>&1 && "$py" -m pip show -q torchaudio >/dev/null 2>&1; then
    echo "  note: torchaudio does not import with this torch; ComfyUI 0.3.x runs without it, 0.33+ does not" >&2
  fi
  DREAMO_RELEASES+="$checkout $py ${version:-unknown}"$'\n'
}

GGUF_PACK="${COMFYUI_GGUF_PATH:-$HOME/ComfyUI-GGUF}"
GGUF_PACK_COMMIT="795e45156ece99afbc3efef911e63fcb46e6a20d"  # the commit the GGUF tests ran on
if [ "${DREAMO_TEST_DEPS:-0}" = 1 ] && [ ! -f "$GGUF_PACK/nodes.py" ] && [ ! -e "$GGUF_PACK" ] && command -v git >/dev/null 2>&1; then
  echo "  cloning city96/ComfyUI-GGUF at $GGUF_PACK_COMMIT into $GGUF_PACK (GGUF tests only)"
  { git clone -q https://github.com/city96/ComfyUI-GGUF "$GGUF_PACK" 2>/dev/null && git -C "$GGUF_PACK" checkout -q "$GGUF_PACK_COMMIT"; } \
    || { echo "  (the clone failed: no network to GitHub? the GGUF tests will be skipped with the reason)"; rm -rf "$GGUF_PACK"; }
fi

if ! command -v "$BASE_PY" >/dev/null 2>&1; then
  echo "Stopped: no Python at '$BASE_PY' (set PYTHON to one, 3.10 or newer)." >&2
  exit 1
fi
echo "DreamO setup: Python $(command -v "$BASE_PY") ($("$BASE_PY" -c 'import sys; print(sys.version.split()[0])'))"
DREAMO_RELEASES=""
FIRST=$(enclosing_comfyui)
FIRST=${FIRST:-$HOME/comfyui}
prepare_checkout "$FIRST" "${COMFYUI_GIT_DIR:-}" "$COMFYUI_FLOOR_TAG" || true
SECOND="${COMFYUI_LATEST_PATH:-$HOME/comfyui-latest}"
if [ "${DREAMO_ONE_CHECKOUT:-0}" != 1 ] && [ "$(real_dir "$SECOND")" != "$(real_dir "$FIRST")" ]; then
  prepare_checkout "$SECOND" "${COMFYUI_LATEST_GIT_DIR:-}" || true
fi
if [ -z "$DREAMO_RELEASES" ]; then
  echo "  no ComfyUI checkout at $FIRST$([ "${DREAMO_ONE_CHECKOUT:-0}" = 1 ] || echo " or $SECOND")"
  echo "  (get one: git clone --branch $COMFYUI_FLOOR_TAG $COMFYUI_REPO ~/comfyui, or set COMFYUI_PATH; README 'Install')"
  if [ "${DREAMO_TEST_DEPS:-0}" = 1 ]; then
    echo "  the host-independent tests run in $BASE_PY: installing the pack's requirements there (without ComfyUI"
    echo "  there is no venv to put them in; set PYTHON to a venv to keep them out of this Python)"
    reqs=$(mktemp)
    pack_requirements "$BASE_PY" > "$reqs"
    pip_install "$BASE_PY" -r "$reqs"
    rm -f "$reqs"
  fi
fi
export DREAMO_RELEASES
