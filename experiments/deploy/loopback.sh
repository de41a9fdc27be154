#!/usr/bin/env bash
# A whole Flower deployment on 127.0.0.1 for a small vertical world: SuperLink + bank/tax/supply_chain
# SuperNodes (TLS and SuperNode authentication unless --insecure), `flwr run`, results in OUTDIR
# (results.json, metrics.csv, deployment.json with KS deployment vs in-process simulation).
# Every process it starts is stopped again, also on failure or Ctrl-C (fedrisk.federation.deploy.loopback).
#
#   experiments/deploy/loopback.sh OUTDIR [--insecure] [more options of `python -m fedrisk.deploy loopback`]
set -euo pipefail
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: $0 OUTDIR [--insecure] [--config FILE] [--set KEY=VALUE ...]" >&2
    exit 2
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m fedrisk.deploy loopback "$@"
