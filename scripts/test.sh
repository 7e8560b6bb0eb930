#!/usr/bin/env bash
# The test suite as CI runs it: lint, type-check, then every test against the real components.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EVOFORGE_VENV:-.venv}
export LANGGRAPH_CLI_NO_ANALYTICS=1 LANGSMITH_TRACING=false RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false
# set -e alone would end the script without a word: say which check failed and how to run it again
check() {
  local name=$1; shift
  if ! "$@"; then
    echo "scripts/test.sh: $name failed (its findings are above); reproduce with: cd $PWD && $*" >&2
    exit 1
  fi
}
check ruff "$VENV/bin/ruff" check evoforge tests benchmarks
check mypy "$VENV/bin/mypy" evoforge
exec "$VENV/bin/python" -m pytest "$@"
