#!/usr/bin/env bash
# The main job: materialize every asset on the offline `tiny` preset into the persistent Dagster instance in
# var/dagster_home, so `dagster dev -w workspace.yaml` (with the same DAGSTER_HOME) shows the runs afterwards.
# Each policy's `human_eval_results` waits for people (tag rlhf/waits_for=people): the run queues the human-eval tasks
# (var/labeling/labels.sqlite), and the policy's labels-complete sensor materializes the results once they are
# labelled (README: Human evaluation).
set -euo pipefail
cd "$(dirname "$0")/.."
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/var/dagster_home}"
mkdir -p "$DAGSTER_HOME"
export RLHF_PRESET="${RLHF_PRESET:-tiny}"
.venv/bin/dagster asset materialize -m rlhf_assets.definitions --select 'not tag:"rlhf/waits_for"="people"' "$@"
.venv/bin/rlhf-assets progress || true
echo "Label the tasks: .venv/bin/rlhf-assets annotators add NAME && .venv/bin/rlhf-assets label --port 8080"
