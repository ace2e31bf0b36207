"""Automation of the human-evaluation domain: each policy's results once its annotators are done.

One labels-complete sensor per policy (`human_eval_labels_complete_ppo_policy`, `..._dpo_policy`; on by default)
requests that policy's `human_eval_results` once every task of its latest `human_eval_tasks` batch has its labels
in the app's database, or its Ground Truth job has completed. This stays a sensor: what it waits for is outside
Dagster (people, a labeling job), which declarative automation cannot see.
"""

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    sensor,
)

from rlhf_assets.defs.evaluation.suite import EvaluatedPolicy
from rlhf_assets.defs.human_eval.assets import WAITS_FOR_PEOPLE
from rlhf_assets.resources import LabelingResource

collect_human_eval = define_asset_job(
    "collect_human_eval", selection=AssetSelection.tag(*WAITS_FOR_PEOPLE),
    description="Summarize the human labels of a policy's latest human_eval_tasks batch.",
)


def labels_complete_sensor(policy: EvaluatedPolicy) -> SensorDefinition:
    """Request `policy`'s human_eval_results once its latest batch is fully labelled, and only once per batch."""
    tasks_key, results_key = policy.key("human_eval_tasks"), policy.key("human_eval_results")

    @sensor(job=collect_human_eval, name=f"human_eval_labels_complete_{policy.asset}",
            default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=60,
            description=f"Summarize {policy.asset}'s human labels once complete.")
    def labels_complete(context: SensorEvaluationContext, labeling: LabelingResource) -> RunRequest | SkipReason:
        tasks_event = context.instance.get_latest_materialization_event(tasks_key)
        if tasks_event is None or tasks_event.asset_materialization is None:
            return SkipReason(f"{tasks_key.to_user_string()} has not been materialized")
        metadata = tasks_event.asset_materialization.metadata
        batch, channel = str(metadata["batch_id"].value), str(metadata["channel"].value)
        results_event = context.instance.get_latest_materialization_event(results_key)
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
        return RunRequest(run_key=run_key, asset_selection=[results_key],
                          tags={"rlhf/trigger": "labels_complete", "rlhf/batch": batch, "rlhf/policy": policy.asset})

    return labels_complete
