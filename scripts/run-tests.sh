#!/usr/bin/env bash
# make test: lint, start real services, run pytest, stop the services by PID (also on failure).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export PYTHON=$VENV/bin/python HF_HUB_OFFLINE=1 BENTOML_DO_NOT_TRACK=True
"$VENV/bin/ruff" check .
"$VENV/bin/lint-imports"
env_file=$(mktemp)
cleanup() {
  if [ -s "$env_file" ]; then
    # shellcheck disable=SC1090
    source "$env_file"; scripts/services.sh stop "$SONA_SERVICES_DIR"
  fi
  rm -f "$env_file"
}
trap cleanup EXIT INT TERM
scripts/services.sh start >"$env_file"
# shellcheck disable=SC1090
source "$env_file"
export SONA_REQUIRE_SERVICES=1
# the notebooks run once each inside tests/integration/test_notebooks.py (executed copies with their plots
# go to $SONA_ARTIFACTS_DIR/notebooks, else build/notebooks)
"$VENV/bin/python" -m pytest -p no:cacheprovider -ra --durations=20 tests "$@"
