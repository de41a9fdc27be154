# Source me: Flower and Ray settings every fedrisk command runs with (the package sets the same defaults).
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export FEDRISK_HOME="${FEDRISK_HOME:-$(pwd)/.fedrisk}"
export FLWR_HOME="${FLWR_HOME:-$FEDRISK_HOME/flwr}"
export RAY_TMPDIR="${RAY_TMPDIR:-/tmp/fedrisk-ray-$(id -u)}"
