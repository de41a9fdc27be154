#!/usr/bin/env bash
# Create .venv and install fedrisk with its test tools, once: a stamp keyed on the hash of pyproject.toml and
# this script skips the work when nothing changed (every make target depends on it).
#
# torch comes first, CPU-only by default: pip is pointed at PyTorch's CPU wheel index for torch alone (a plain
# `torch==X` from PyPI is the CUDA build on Linux, ~4 GB of nvidia-* wheels). If that index cannot be reached we
# fall back, within seconds (short timeout, no retries), to the plain pin from pip's configured indexes.
#
# Environment:
#   PYTHON               interpreter for the venv (default python3; must be >= 3.11)
#   FEDRISK_TORCH_INDEX  index for torch. GPU users: a CUDA index, e.g. https://download.pytorch.org/whl/cu128,
#                        on a fresh .venv (rm -rf .venv first). "default" = pip's own configured index.
#   FEDRISK_REINSTALL=1  ignore the stamp and reinstall.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_SPEC="torch==2.13.0"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
TORCH_INDEX="${FEDRISK_TORCH_INDEX:-$CPU_INDEX}"
STAMP=".venv/fedrisk-install.stamp"
PYTHON="${PYTHON:-python3}"

key="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1)"
if [ "${FEDRISK_REINSTALL:-0}" != "1" ] && [ -x .venv/bin/python ] && [ -f "$STAMP" ] \
  && [ "$(cat "$STAMP")" = "$key" ]; then
  touch "$STAMP" # make compares mtimes: a touched but unchanged pyproject.toml must not retrigger us
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: fedrisk needs Python >= 3.11; set PYTHON=/path/to/python3.11 (got: $("$PYTHON" -V 2>&1))" >&2
    exit 2
  fi
  "$PYTHON" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)
rm -f "$STAMP"

echo "fedrisk: installing $TORCH_SPEC (from ${TORCH_INDEX})" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if [ "$TORCH_INDEX" = "default" ]; then
  "${pip[@]}" install --quiet "$TORCH_SPEC"
elif ! "${pip[@]}" install --quiet --index-url "$TORCH_INDEX" --timeout 10 --retries 0 "$TORCH_SPEC" \
  2>"$log"; then
  echo "fedrisk: $TORCH_INDEX not reachable; falling back to $TORCH_SPEC from pip's configured index" >&2
  echo "         (PyPI's Linux torch is the CUDA build; FEDRISK_TORCH_INDEX=<url> picks another CPU index)" >&2
  "${pip[@]}" install --quiet "$TORCH_SPEC"
fi

echo "fedrisk: installing fedrisk and its dependencies" >&2
"${pip[@]}" install --quiet -e ".[test]"

if "${pip[@]}" list --format=freeze 2>/dev/null | grep -qi '^nvidia-'; then
  if [ "$TORCH_INDEX" = "$CPU_INDEX" ]; then
    echo "warning: nvidia-* packages are installed although the CPU build was asked for:" >&2
    "${pip[@]}" list --format=freeze | grep -i '^nvidia-' >&2
  fi
fi
echo "$key" >"$STAMP"
echo "fedrisk: installed ($(du -sh .venv | cut -f1) in .venv)" >&2
