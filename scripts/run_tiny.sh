#!/usr/bin/env bash
# The main job: materialize every asset on the offline `tiny` preset into the persistent Dagster instance in
# var/dagster_home, so `dagster dev -w workspace.yaml` (with the same DAGSTER_HOME) shows the runs afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/var/dagster_home}"
mkdir -p "$DAGSTER_HOME"
export RLHF_PRESET="${RLHF_PRESET:-tiny}"
exec .venv/bin/dagster asset materialize -m rlhf_assets.definitions --select '*' "$@"
