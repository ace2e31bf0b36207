"""Automation of the models domain: stop SageMaker training jobs that outlived their Dagster run.

`orphaned_training_jobs` (on by default, idle unless the SageMaker backend is configured) stops a job whose run
ended without it, once a re-execution had half an hour to adopt it.
"""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.compute.sagemaker.jobs import orphaned_jobs

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
