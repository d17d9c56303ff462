#!/usr/bin/env bash
# The test command (README, CI): install what is missing, then run the whole suite.
# Host tests run against $COMFYUI_PATH (default ~/comfyui) and are skipped, with the reason, without it.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DREAMO_TEST_DEPS=1 source "$REPO/scripts/install_deps.sh" || exit 1
set +e
cd "$REPO"
"${PYTHON:-python3}" -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests (exit 5): treating as a failure, the suite must not be empty." >&2
  exit 1
fi
exit $rc
