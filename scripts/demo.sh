#!/usr/bin/env bash
# The main job: set up, then run the whole pipeline on the built-in demo data (offline, a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ragtune run configs/demo.yaml --out runs/demo --overwrite "$@"
