#!/usr/bin/env bash
# The test command (README, CI): install what is missing, then run the whole suite once per ComfyUI checkout
# found (COMFYUI_PATH, COMFYUI_LATEST_PATH), each in its own venv. Without any checkout the host-independent
# tests run and a loud warning says that the ComfyUI tests did not. Extra arguments go to pytest.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Parallel workers (pytest-xdist): the server and browser tests mostly wait on a server or Chromium, so even two
# cores run two modules at once. Whole modules go to a worker (`loadfile`: one module's server and browser stay
# in one process), in the order tests/conftest.py gives (servers and browsers first). DREAMO_TEST_WORKERS=1, or
# your own -n / -p no:xdist, runs them in this process as plain pytest does.
WORKERS=${DREAMO_TEST_WORKERS:-$(n=$(nproc 2>/dev/null || echo 1); [ "$n" -gt 4 ] && n=4; echo "$n")}
if ! [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]]; then
  echo "scripts/test.sh: DREAMO_TEST_WORKERS must be a whole number of workers, 1 or more (got '$WORKERS')" >&2
  exit 2
fi
PARALLEL=()
if [ "$WORKERS" -gt 1 ] && ! printf '%s\n' "$@" | grep -qE '^(-n|--numprocesses|no:xdist$|-pno:xdist$)'; then
  # (pytest-benchmark, when a Python has it, would warn once per worker that it is off: no test here uses it)
  PARALLEL=(-n "$WORKERS" --dist loadfile --no-loadscope-reorder -p no:benchmark)
fi

DREAMO_TEST_DEPS=1 source "$REPO/scripts/install_deps.sh" || exit 1
set +e
cd "$REPO"

run_pytest() {  # label, python, then pytest arguments
  local label=$1 py=$2; shift 2
  echo "=== tests on $label ==="
  "$py" -m pytest "${PARALLEL[@]}" "$@"
  local rc=$?
  if [ $rc -eq 5 ]; then
    echo "pytest collected no tests on $label (exit 5): a failure, the suite must not be empty." >&2
    rc=1
  fi
  SUMMARY+="  $label: $([ $rc -eq 0 ] && echo passed || echo "FAILED (exit $rc)")"$'\n'
  return $rc
}

SUMMARY="" status=0
if [ -z "$DREAMO_RELEASES" ]; then
  run_pytest "no ComfyUI (host tests skipped)" "${PYTHON:-python3}" "$@" || status=1
  cat >&2 <<'MSG'

############################################################################################################
#  WARNING: no ComfyUI checkout was found, so every test that needs ComfyUI was SKIPPED (see the summary).  #
#  Only the host-independent math was tested. Set COMFYUI_PATH (README: the variables table) and run again. #
############################################################################################################
MSG
  [ "${DREAMO_REQUIRE_HOST:-0}" = 1 ] && status=1
else
  while read -r checkout py version; do
    [ -n "$checkout" ] || continue
    COMFYUI_PATH="$checkout" run_pytest "ComfyUI $version ($checkout)" "$py" "$@" || status=1
  done <<< "$DREAMO_RELEASES"
fi
echo "=== summary ==="
printf '%s' "$SUMMARY"
exit $status
