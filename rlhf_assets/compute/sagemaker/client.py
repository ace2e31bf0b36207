"""`PipesSageMakerClient`: a SageMaker training job as a Dagster Pipes external process.

Shaped like dagster-aws's Pipes clients (ECS, EMR Serverless, Glue): `run(*, context, create_training_job_params,
extras=None)` opens a Pipes session, puts the session's bootstrap variables into the job's `Environment`, creates
the job, composes the job's CloudWatch streams into the message reader, polls `describe_training_job` until the
job ends and returns a completed invocation whose metadata carries the job's identity, times and estimated cost.

Whatever goes wrong while the job runs (a cancelled Dagster run, a throttled or expired credential, a bug), the
job is stopped before the error propagates: a p4d job must never be left running unwatched. Creation is
idempotent (a resent create adopts the job the lost one made) and sits inside the same guard. No capacity (a
`CapacityError` failure, or a spot job `Stopped` at `MaxWaitTimeExceeded`) asks Dagster to retry the step, which
resumes from the job's checkpoints; a quota refusal at creation names the quota to raise.
"""

from __future__ import annotations

import time
from typing import Any

import boto3
from botocore.exceptions import ClientError
from dagster import (
    AssetExecutionContext,
    DagsterExecutionInterruptedError,
    Failure,
    MetadataValue,
    OpExecutionContext,
    PipesClient,
    PipesClientCompletedInvocation,
    PipesContextInjector,
    PipesMessageReader,
    RetryRequested,
    open_pipes_session,
)
from dagster._core.definitions.resource_annotation import TreatAsResourceParam  # not public; dagster-aws uses it too

from rlhf_assets.compute.sagemaker.jobs import (
    ACTIVE,
    NAME_IN_USE,
    RUN_ID_TAG,
    WORK_KEY_TAG,
    CheckpointLease,
    error_code,
    job_status,
    job_tags,
)
from rlhf_assets.compute.sagemaker.logs import THROTTLING_CODES, TrainingJobLogReader
from rlhf_assets.compute.sagemaker.pricing import LIST_PRICES_USD_PER_HOUR, PRICE_SOURCE, estimate_cost

# Failure reasons that mean "no capacity right now" (spot or on-demand), worth retrying from the checkpoint.
CAPACITY_ERRORS = ("CapacityError", "InsufficientInstanceCapacity", "Unable to provision requested ML compute capacity")
# A managed-spot job that waited `MaxWaitTimeInSeconds` for capacity ends Stopped with this secondary status.
CAPACITY_STOPS = ("MaxWaitTimeExceeded",)
TERMINAL = ("Completed", "Failed", "Stopped")


class PipesSageMakerClient(PipesClient, TreatAsResourceParam):
    """Runs a step as a SageMaker training job under Dagster Pipes (S3 context injector + S3 message reader)."""

    def __init__(
        self,
        *,
        context_injector: PipesContextInjector,
        message_reader: PipesMessageReader,
        client: Any | None = None,
        logs_client: Any | None = None,
        poll_interval: float = 30.0,
        forward_termination: bool = True,
        prices: dict[str, float] | None = None,
        capacity_retries: int = 3,
        capacity_retry_seconds: float = 600.0,
        max_poll_backoff: float = 300.0,
    ) -> None:
        self.client = client or boto3.client("sagemaker")
        self.logs_client = logs_client or boto3.client("logs")
        self.context_injector, self.message_reader = context_injector, message_reader
        self.poll_interval, self.forward_termination = poll_interval, forward_termination
        self.prices = {**LIST_PRICES_USD_PER_HOUR, **(prices or {})}
        self.capacity_retries, self.capacity_retry_seconds = capacity_retries, capacity_retry_seconds
        self.max_poll_backoff = max_poll_backoff

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def run(  # type: ignore[override]
        self,
        *,
        context: OpExecutionContext | AssetExecutionContext,
        create_training_job_params: dict[str, Any],
        extras: dict[str, Any] | None = None,
        adopt: bool = False,
        lease: CheckpointLease | None = None,
    ) -> PipesClientCompletedInvocation:
        """Create the training job with the Pipes bootstrap in its environment and wait for it to finish.

        `adopt` waits for the already running job of that name instead of creating one (a job whose run worker
        died, found by `jobs.running_job_for`); `lease` is held on the job's checkpoint prefix from before the
        job exists until it has ended, and kept when it may not have (a failed stop), so no second job trains there.
        """
        with open_pipes_session(context=context, message_reader=self.message_reader,
                                context_injector=self.context_injector, extras=extras) as session:
            params = self._enrich(create_training_job_params, session.get_bootstrap_env_vars(),
                                  session.default_remote_invocation_info)
            name = params["TrainingJobName"]
            if lease is not None:
                lease.acquire(name, context.run_id, self.client, context.instance)
            if adopt:
                context.log.info(f"[pipes] adopting SageMaker training job {name}, still in progress")
            else:
                try:
                    self._create(context, params)
                except BaseException:
                    if lease is not None and job_status(self.client, name) is None:
                        lease.release()  # no job was made: the prefix is free again
                    raise
            try:  # from here on the job exists: whatever happens, it is stopped before the error propagates
                add_log_reader = getattr(self.message_reader, "add_log_reader", None)
                if add_log_reader is not None:
                    add_log_reader(TrainingJobLogReader(self.logs_client, name))
                description = self._wait(context, name)
            except DagsterExecutionInterruptedError:
                if self.forward_termination:
                    self._stop(context, name, "the Dagster run was interrupted")
                raise
            except BaseException as error:
                self._stop(context, name, f"{type(error).__name__} while waiting for it")
                raise
            if lease is not None:  # the job has ended: the prefix is free
                lease.release()
            self._raise_unless_completed(context, description)
            return PipesClientCompletedInvocation(session, metadata=self._metadata(description))

    @staticmethod
    def _enrich(params: dict[str, Any], bootstrap: dict[str, str], tags: dict[str, str]) -> dict[str, Any]:
        environment = {**params.get("Environment", {}), **bootstrap}
        job_tags = [*params.get("Tags", []), *({"Key": k, "Value": v} for k, v in tags.items())]
        return {**params, "Environment": environment, "Tags": job_tags}

    def _create(self, context: OpExecutionContext | AssetExecutionContext, params: dict[str, Any]) -> None:
        """Create the job, idempotently: botocore resends a create whose response was lost, and the resent call
        meets the job the first one made ("already exists"), which is then adopted. A create that fails in any
        other way may still have reached SageMaker: a job it made is stopped before the error propagates."""
        name = params["TrainingJobName"]
        try:
            response = self.client.create_training_job(**params)
        except ClientError as error:
            if error_code(error) in NAME_IN_USE:
                try:
                    self._adopt_own(context, params)
                except BaseException as adopting:  # a job of ours may run: never leave it unwatched
                    if not isinstance(adopting, Failure):
                        self._stop_if_created(context, name, f"{type(adopting).__name__} while adopting it")
                    raise
                return
            if error_code(error) == "ResourceLimitExceeded":
                raise self._quota_failure(params, error) from None
            self._stop_if_created(context, name, f"{error_code(error)} from CreateTrainingJob")
            raise
        except BaseException as error:
            self._stop_if_created(context, name, f"{type(error).__name__} during CreateTrainingJob")
            raise
        context.log.info(f"[pipes] SageMaker training job {name} created: {response['TrainingJobArn']}")

    def _adopt_own(self, context: OpExecutionContext | AssetExecutionContext, params: dict[str, Any]) -> None:
        name = params["TrainingJobName"]
        arn = self.client.describe_training_job(TrainingJobName=name)["TrainingJobArn"]
        ours = {tag["Key"]: tag["Value"] for tag in params.get("Tags", []) if tag["Key"] in (WORK_KEY_TAG, RUN_ID_TAG)}
        found = job_tags(self.client, arn)
        if not ours or any(found.get(key) != value for key, value in ours.items()):
            raise Failure(description=f"a training job named {name} already exists and was not started by this "
                                      f"run for this work (its tags: {found}); refusing to watch a stranger's job")
        context.log.info(f"[pipes] SageMaker training job {name} already exists (a create resent after a lost "
                         f"response): adopting it: {arn}")

    def _stop_if_created(self, context: OpExecutionContext | AssetExecutionContext, name: str, why: str) -> None:
        try:
            status = job_status(self.client, name)
        except Exception as error:  # the create's own error matters more; say how to check by hand
            context.log.error(f"[pipes] could not tell whether training job {name} was created ({error}); check: "
                              f"aws sagemaker describe-training-job --training-job-name {name}")
            return
        if status in ACTIVE:
            self._stop(context, name, why)

    def _quota_failure(self, params: dict[str, Any], error: ClientError) -> Failure:
        resources = params["ResourceConfig"]
        kind = "spot training job usage" if params.get("EnableManagedSpotTraining") else "training job usage"
        return Failure(description=(
            f"SageMaker refused {resources.get('InstanceCount', 1)} × {resources['InstanceType']} "
            f"({error.response['Error'].get('Message', '')}). Raise the Service Quotas value "
            f"'{resources['InstanceType']} for {kind}' (service: Amazon SageMaker) in region "
            f"{self.client.meta.region_name}, or choose another instance type or spot setting "
            "(the `compute.sagemaker` resource's instance_type / use_spot)."),
            metadata={"instance_type": resources["InstanceType"], "quota": f"{resources['InstanceType']} for {kind}"})

    def _wait(self, context: OpExecutionContext | AssetExecutionContext, name: str) -> dict[str, Any]:
        """Poll until the job reaches a terminal status; throttled polls back off instead of failing."""
        last_status, delay = None, self.poll_interval
        while True:
            try:
                description = self.client.describe_training_job(TrainingJobName=name)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") not in THROTTLING_CODES:
                    raise
                delay = min(max(delay, 1.0) * 2, self.max_poll_backoff)
                context.log.warning(f"[pipes] describe_training_job throttled; next poll in {delay:.0f}s")
                time.sleep(delay)
                continue
            delay = self.poll_interval
            status = (description["TrainingJobStatus"], description.get("SecondaryStatus"))
            if status != last_status:
                context.log.info(f"[pipes] SageMaker training job {name}: {status[0]} ({status[1]})")
                last_status = status
            if status[0] in TERMINAL:
                return description
            time.sleep(self.poll_interval)

    def _stop(self, context: OpExecutionContext | AssetExecutionContext, name: str, why: str) -> None:
        context.log.warning(f"[pipes] stopping SageMaker training job {name}: {why}")
        try:
            self.client.stop_training_job(TrainingJobName=name)
        except Exception as error:  # the original error matters more; say how to stop it by hand
            context.log.error(f"[pipes] could not stop training job {name} ({type(error).__name__}: {error}); "
                              f"stop it by hand: aws sagemaker stop-training-job --training-job-name {name}")

    def _raise_unless_completed(self, context: OpExecutionContext | AssetExecutionContext,
                                description: dict[str, Any]) -> None:
        name, status = description["TrainingJobName"], description["TrainingJobStatus"]
        reason = description.get("FailureReason") or "no reason given"
        capacity = (status == "Failed" and any(marker in reason for marker in CAPACITY_ERRORS)) or (
            status == "Stopped" and description.get("SecondaryStatus") in CAPACITY_STOPS)
        if capacity:
            context.log.warning(f"[pipes] {name}: no capacity ({description.get('SecondaryStatus')}: {reason}); "
                                f"retrying from the last checkpoint in {self.capacity_retry_seconds:.0f}s")
            raise RetryRequested(max_retries=self.capacity_retries, seconds_to_wait=self.capacity_retry_seconds)
        if status == "Failed":
            raise Failure(description=f"SageMaker training job {name} failed: {reason}",
                          metadata={"training_job_name": name})
        if status == "Stopped":
            raise Failure(description=f"SageMaker training job {name} was stopped "
                                      f"({description.get('SecondaryStatus')})", metadata={"training_job_name": name})

    def _metadata(self, description: dict[str, Any]) -> dict[str, MetadataValue]:
        name, arn = description["TrainingJobName"], description["TrainingJobArn"]
        region = arn.split(":")[3]
        cost = estimate_cost(description, self.prices)
        metadata: dict[str, MetadataValue] = {
            "training_job_name": MetadataValue.text(name),
            "training_job_arn": MetadataValue.text(arn),
            "console_url": MetadataValue.url(f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
                                             f"#/jobs/{name}"),
            "instance_type": MetadataValue.text(cost["instance_type"]),
            "instance_count": MetadataValue.int(cost["instance_count"]),
            "training_seconds": MetadataValue.int(cost["training_seconds"]),
            "billable_seconds": MetadataValue.int(cost["billable_seconds"]),
            "spot_savings": MetadataValue.float(cost["spot_savings"]),
        }
        if cost["estimated_cost_usd"] is not None:
            metadata["estimated_cost_usd"] = MetadataValue.float(cost["estimated_cost_usd"])
            metadata["price_source"] = MetadataValue.text(PRICE_SOURCE)
        return metadata
