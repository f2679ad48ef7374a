#!/usr/bin/env bash
# The main job: set up, then run the whole pipeline on the built-in demo data (offline, a few minutes):
# steps 1-4 (ragtune run), then step 7's offline parts: an int8 ONNX export checked against PyTorch,
# and an explanation of one prediction. Extra arguments go to `ragtune run` (e.g. train.epochs=2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ragtune run configs/demo.yaml --out runs/demo --overwrite "$@"
.venv/bin/ragtune export runs/demo --format onnx --quantize int8 --out runs/demo-onnx --overwrite
.venv/bin/ragtune explain runs/demo "The central bank raised interest rates as the stock market fell" \
  --out runs/demo/explanation.html --overwrite > /dev/null
echo
echo "report:       runs/demo/report.md"
echo "explanation:  runs/demo/explanation.html (and .png)"
echo "serve it:     .venv/bin/ragtune serve runs/demo   then open http://127.0.0.1:8000/"
echo "or the int8:  .venv/bin/ragtune serve runs/demo-onnx --engine onnx"
