"""Automation: scheduled re-evaluation, a new-policy sensor, and a sensor that collects human labels.

The schedule (`RLHF_EVAL_CRON`, nightly at 03:00 UTC by default; off until switched on in the UI) re-runs the
evaluation against the latest `ppo_policy`; results that are unchanged (same policy, same data, same code)
are reused, so an idle night costs seconds. The sensor (on by default) requests the same job when a
`ppo_policy` materialization is newer than the latest evaluation, e.g. after a training run that stopped at
the policy. `human_eval_labels_complete` (on by default) requests `human_eval_results` once every task of the
latest `human_eval_tasks` batch has its labels in the app's database, or its Ground Truth job has completed.
"""

import os

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInvalidDefinitionError,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    EventLogEntry,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    asset_sensor,
    define_asset_job,
    sensor,
)

from rlhf_assets.resources import LabelingResource

EVALUATION_GROUP = "evaluation"
# The evaluation is complete once both of these are newer than the policy.
FINAL_EVALUATION_ASSETS = (AssetKey("toxicity_scores"), AssetKey("auto_preference"))
DEFAULT_CRON = "0 3 * * *"

evaluate_latest_policy = define_asset_job(
    "evaluate_latest_policy",
    selection=AssetSelection.groups(EVALUATION_GROUP),
    description="Eval responses, toxicity and automatic preference of the latest ppo_policy against SFT.",
)


def build_evaluation_schedule() -> ScheduleDefinition:
    """The periodic re-evaluation; its cron comes from `RLHF_EVAL_CRON` and is refused at load time if invalid."""
    cron = os.environ.get("RLHF_EVAL_CRON", DEFAULT_CRON)
    try:
        return ScheduleDefinition(
            name="scheduled_evaluation", job=evaluate_latest_policy, cron_schedule=cron,
            execution_timezone="UTC", default_status=DefaultScheduleStatus.STOPPED,
            description=f"Re-evaluate the latest ppo_policy on cron {cron!r} (RLHF_EVAL_CRON).",
        )
    except DagsterInvalidDefinitionError:
        raise ValueError(f"RLHF_EVAL_CRON={cron!r} is not a valid cron expression (e.g. {DEFAULT_CRON!r})") from None


@asset_sensor(asset_key=AssetKey("ppo_policy"), job=evaluate_latest_policy, name="evaluate_new_policy",
              default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=60)
def evaluate_new_policy(context: SensorEvaluationContext, asset_event: EventLogEntry) -> RunRequest | SkipReason:
    """Evaluate a new policy unless a run after it already produced every final evaluation asset."""
    policy_record = context.instance.get_latest_materialization_event(AssetKey("ppo_policy"))
    policy_time = asset_event.timestamp if policy_record is None else max(asset_event.timestamp,
                                                                          policy_record.timestamp)
    evaluated = [context.instance.get_latest_materialization_event(key) for key in FINAL_EVALUATION_ASSETS]
    if all(event is not None and event.timestamp > policy_time for event in evaluated):
        return SkipReason(f"the policy from run {asset_event.run_id} is already evaluated")
    return RunRequest(run_key=f"ppo_policy-{asset_event.run_id}-{asset_event.timestamp}",
                      tags={"rlhf/trigger": "new_policy", "rlhf/policy_run": asset_event.run_id})


collect_human_eval = define_asset_job(
    "collect_human_eval", selection=AssetSelection.assets("human_eval_results"),
    description="Summarize the human labels of the latest human_eval_tasks batch.",
)


@sensor(job=collect_human_eval, name="human_eval_labels_complete", default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60)
def human_eval_labels_complete(context: SensorEvaluationContext, labeling: LabelingResource) -> RunRequest | SkipReason:
    """Request the results once the latest batch is fully labelled, and only once per batch."""
    tasks_event = context.instance.get_latest_materialization_event(AssetKey("human_eval_tasks"))
    if tasks_event is None or tasks_event.asset_materialization is None:
        return SkipReason("human_eval_tasks has not been materialized")
    metadata = tasks_event.asset_materialization.metadata
    batch, channel = str(metadata["batch_id"].value), str(metadata["channel"].value)
    results_event = context.instance.get_latest_materialization_event(AssetKey("human_eval_results"))
    if (results_event is not None and results_event.asset_materialization is not None
            and results_event.timestamp > tasks_event.timestamp
            and results_event.asset_materialization.metadata.get("batch_id") is not None
            and results_event.asset_materialization.metadata["batch_id"].value == batch):
        return SkipReason(f"batch {batch} already has results")
    if channel == "ground_truth":
        job_name = str(metadata["labeling_job_name"].value)
        status = labeling.sagemaker_client().describe_labeling_job(LabelingJobName=job_name)["LabelingJobStatus"]
        if status != "Completed":
            return SkipReason(f"Ground Truth job {job_name} is {status}")
        run_key = f"human-eval-{job_name}"
    else:
        progress = labeling.store().progress(batch)
        if not progress.complete:
            return SkipReason(f"batch {batch}: {progress.counted_labels} of {progress.required_labels} labels, "
                              f"{progress.complete_tasks} of {progress.tasks} tasks complete")
        run_key = f"human-eval-{batch}-{progress.labels}"
    return RunRequest(run_key=run_key, tags={"rlhf/trigger": "labels_complete", "rlhf/batch": batch})
