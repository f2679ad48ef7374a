#!/usr/bin/env bash
# Set up, then run the test suite (slow tests are opt-in: scripts/test.sh --runslow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -q "$@"
