#!/usr/bin/env bash
# Any preset exactly as configured with only sizes shrunk, offline: the local hub mirror (built once under
# var/hub-mirror from ../shared/data) stands in for the hub, and the run goes into its own Dagster instance and
# artifact root (var/miniature/<preset>). Checks run and report but do not block: the mirror's models are random.
#   bash scripts/run_miniature.sh small       # the whole graph through the local backend
#   bash scripts/run_miniature.sh gptj_6b     # through SageMaker: needs the AWS settings of the README
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:?usage: run_miniature.sh PRESET [dagster asset materialize options]}"
shift
mirror="${RLHF_HUB_MIRROR:-$PWD/var/hub-mirror}"
eval "$(.venv/bin/rlhf-assets mirror --print-env "$mirror" | grep "^export ")"
export RLHF_PRESET="$preset" RLHF_MINIATURE=1 RLHF_BLOCKING_CHECKS=0
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/var/miniature/$preset/dagster_home}"
export RLHF_ARTIFACT_ROOT="${RLHF_ARTIFACT_ROOT:-$PWD/var/miniature/$preset/artifacts}"
export RLHF_LABELING_DB="${RLHF_LABELING_DB:-$PWD/var/miniature/$preset/labels.sqlite}"
mkdir -p "$DAGSTER_HOME"
.venv/bin/dagster asset materialize -m rlhf_assets.definitions --select 'not tag:"rlhf/waits_for"="people"' "$@"
