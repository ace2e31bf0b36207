"""Automation: scheduled re-evaluation, and per policy a sensor that evaluates it and one that collects its labels.

The schedule (`RLHF_EVAL_CRON`, nightly at 03:00 UTC by default; off until switched on in the UI) re-runs the
evaluation of every policy (`assets/policy_evaluation.POLICIES`) and the comparison; results that are unchanged
(same policy, same data, same code) are reused, so an idle night costs seconds. One sensor per policy (on by
default) requests that policy's evaluation suite and the comparison when the policy's latest materialization is
newer than its evaluation, e.g. after a training run that stopped at the policy. One labels-complete sensor per
policy (`human_eval_labels_complete` for PPO, `human_eval_labels_complete_dpo_policy`, ...; on by default) requests
that policy's `human_eval_results` once every task of its latest `human_eval_tasks` batch has its labels in the
app's database, or its Ground Truth job has completed. `orphaned_training_jobs` (on by default, idle unless the
SageMaker backend is configured) stops SageMaker jobs whose run ended without them, once a re-execution had
half an hour to adopt them.
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
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset_sensor,
    define_asset_job,
    sensor,
)

from rlhf_assets.assets.comparison import COMPARISON_KEY
from rlhf_assets.assets.human_eval import WAITS_FOR_PEOPLE
from rlhf_assets.assets.policy_evaluation import (
    POLICIES,
    EvaluatedPolicy,
    curve_keys,
    sft_baseline_keys,
    suite_keys,
    toxicity_keys,
)
from rlhf_assets.assets.prompt_sets import PROMPT_SETS
from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.compute.sagemaker.jobs import orphaned_jobs
from rlhf_assets.resources import LabelingResource

SHARED_EVALUATION = (AssetKey("rtp_records"), AssetKey("rtp_prompts"), AssetKey("toxicity_model"),
                     *(AssetKey(f"{spec.name}_prompts") for spec in PROMPT_SETS), *sft_baseline_keys())
DEFAULT_CRON = "0 3 * * *"

evaluate_latest_policy = define_asset_job(
    "evaluate_latest_policy",
    selection=AssetSelection.groups(*sorted({policy.group for policy in POLICIES}))
    | AssetSelection.assets(COMPARISON_KEY),
    description="Eval responses, toxicity and automatic preference of the latest version of every policy against "
                "SFT, and the policy comparison.",
)


def build_evaluation_schedule() -> ScheduleDefinition:
    """The periodic re-evaluation; its cron comes from `RLHF_EVAL_CRON` and is refused at load time if invalid."""
    cron = os.environ.get("RLHF_EVAL_CRON", DEFAULT_CRON)
    try:
        return ScheduleDefinition(
            name="scheduled_evaluation", job=evaluate_latest_policy, cron_schedule=cron,
            execution_timezone="UTC", default_status=DefaultScheduleStatus.STOPPED,
            description=f"Re-evaluate the latest version of every policy on cron {cron!r} (RLHF_EVAL_CRON).",
        )
    except DagsterInvalidDefinitionError:
        raise ValueError(f"RLHF_EVAL_CRON={cron!r} is not a valid cron expression (e.g. {DEFAULT_CRON!r})") from None


def new_policy_sensor(policy: EvaluatedPolicy) -> SensorDefinition:
    """Evaluate a new version of `policy` unless a run after it already produced its final evaluation assets."""
    policy_key = AssetKey(policy.asset)
    final = (*toxicity_keys(policy).values(), policy.key("auto_preference"))
    name = "evaluate_new_policy" if not policy.prefix else f"evaluate_new_{policy.asset}"

    @asset_sensor(asset_key=policy_key, job=evaluate_latest_policy, name=name,
                  default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=60,
                  description=f"Evaluate each new {policy.asset} (its suite, its over-optimisation curve where it "
                              "has one, and the comparison).")
    def evaluate_new(context: SensorEvaluationContext, asset_event: EventLogEntry) -> RunRequest | SkipReason:
        policy_record = context.instance.get_latest_materialization_event(policy_key)
        policy_time = asset_event.timestamp if policy_record is None else max(asset_event.timestamp,
                                                                              policy_record.timestamp)
        evaluated = [context.instance.get_latest_materialization_event(key) for key in final]
        if all(event is not None and event.timestamp > policy_time for event in evaluated):
            return SkipReason(f"the {policy.asset} from run {asset_event.run_id} is already evaluated")
        return RunRequest(run_key=f"{policy.asset}-{asset_event.run_id}-{asset_event.timestamp}",
                          asset_selection=[*SHARED_EVALUATION, *suite_keys(policy), *curve_keys(policy),
                                           COMPARISON_KEY],
                          tags={"rlhf/trigger": "new_policy", "rlhf/policy": policy.asset,
                                "rlhf/policy_run": asset_event.run_id})

    return evaluate_new



collect_human_eval = define_asset_job(
    "collect_human_eval", selection=AssetSelection.tag(*WAITS_FOR_PEOPLE),
    description="Summarize the human labels of a policy's latest human_eval_tasks batch.",
)


def labels_complete_sensor(policy: EvaluatedPolicy) -> SensorDefinition:
    """Request `policy`'s human_eval_results once its latest batch is fully labelled, and only once per batch."""
    tasks_key, results_key = policy.key("human_eval_tasks"), policy.key("human_eval_results")
    name = "human_eval_labels_complete" if not policy.prefix else f"human_eval_labels_complete_{policy.asset}"

    @sensor(job=collect_human_eval, name=name, default_status=DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=60, description=f"Summarize {policy.asset}'s human labels once complete.")
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



ORPHAN_GRACE_SECONDS = 1800


@sensor(name="orphaned_training_jobs", default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=300,
        description="Stop SageMaker jobs whose Dagster run ended without them (a killed worker), once a "
                    "re-execution has had 30 minutes to adopt them.")
def orphaned_training_jobs(context: SensorEvaluationContext, compute: ComputeBackend) -> SkipReason | SensorResult:
    """A job whose run worker was killed keeps running, billed, until a re-execution adopts it; if none comes, this
    stops it (its checkpoints stay, so a later re-execution still resumes from them)."""
    sagemaker = compute.sagemaker
    if not sagemaker.role_arn or not sagemaker.bucket:
        return SkipReason("the SageMaker backend is not configured (RLHF_SAGEMAKER_ROLE_ARN, RLHF_SAGEMAKER_BUCKET)")
    client = sagemaker.client("sagemaker")
    orphans = orphaned_jobs(client, context.instance, ORPHAN_GRACE_SECONDS)
    for orphan in orphans:
        context.log.warning(f"stopping training job {orphan.name}: its run {orphan.run_id} is {orphan.run_status} "
                            f"since {orphan.ended_seconds_ago / 60:.0f} min and nobody adopted it")
        client.stop_training_job(TrainingJobName=orphan.name)
    if not orphans:
        return SkipReason("no orphaned training job")
    return SensorResult(skip_reason=SkipReason(f"stopped {len(orphans)} orphaned training job(s): "
                                               f"{', '.join(o.name for o in orphans)}"))
