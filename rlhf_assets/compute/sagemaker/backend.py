"""`SageMakerComputeBackend`: a step as a SageMaker training job, its output adopted by S3 server-side copy.

Inputs are the upstream artifacts' S3 prefixes (one channel each); the job's model directory is uploaded by
SageMaker uncompressed (`CompressionType: NONE`) and the step describes it (content hash, sizes) through Pipes,
so the artifact store adopts it by server-side copy: no model byte passes through the Dagster process, and no
p4d time is spent gzipping a 12 GB checkpoint. The request is checked against botocore's SageMaker model (name,
channel, role and URI patterns) and the bucket's reachability before anything is created.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, NoRegionError
from dagster import AssetExecutionContext, ConfigurableResource, Failure, PipesContextInjector
from dagster_aws.pipes import PipesS3ContextInjector
from pydantic import Field

from rlhf_assets.artifact_files import hash_json
from rlhf_assets.compute.base import StepLaunch, StepRun, output_description
from rlhf_assets.compute.hardware import REACHES_OUTSIDE, Hardware
from rlhf_assets.compute.sagemaker.account import AccountSettings
from rlhf_assets.compute.sagemaker.client import PipesSageMakerClient
from rlhf_assets.compute.sagemaker.jobs import (
    RUN_ID_TAG,
    CheckpointLease,
    JobIdentity,
    job_status,
    running_job_for,
    wait_until_ended,
    work_key,
)
from rlhf_assets.compute.sagemaker.packaging import ImageNotInRegion, default_image_uri, source_tarball
from rlhf_assets.compute.sagemaker.pipes import ChannelContextInjector, RankedS3MessageReader
from rlhf_assets.contract import (
    ACCELERATE_CONFIG_ENV,
    CHECKPOINT_ENV,
    CONTAINER_CHECKPOINT_DIR,
    CONTAINER_ROOT,
    ENTRY_POINT,
    NUM_PROCESSES_ENV,
    PIPES_CONTEXT_CHANNEL,
    PIPES_TRANSPORT_ENV,
    PIPES_TRANSPORT_S3,
    PIPES_TRANSPORT_SYNCED,
    SOURCE_CHANNEL,
    STEP_ENV,
    SYNCED_MESSAGES_DIR,
    input_hash_env,
)
from rlhf_assets.storage import ArtifactStore

# A job that reads only artifacts never reaches the hub: it runs on pinned snapshots, in a VPC without internet too.
OFFLINE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# Standard retry mode: throttled and transient AWS calls are retried with back-off by botocore itself.
RETRIES = Config(retries={"mode": "standard", "max_attempts": 10})


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URI."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def validate_request(params: dict[str, Any], service_model: Any) -> None:
    """Refuse, before anything is created, a request SageMaker would reject: names, channels, the role and the
    S3 URIs are checked against the patterns and lengths in botocore's SageMaker model."""
    def check(shape_name: str, value: str, what: str) -> None:
        shape = service_model.shape_for(shape_name)
        pattern, max_length = shape.metadata.get("pattern"), shape.metadata.get("max")
        if max_length is not None and len(value) > max_length:
            raise Failure(description=f"{what} {value!r} is {len(value)} characters; SageMaker allows {max_length}")
        if pattern and not re.fullmatch(pattern, value):
            raise Failure(description=f"{what} {value!r} does not match SageMaker's pattern {pattern}")

    check("TrainingJobName", params["TrainingJobName"], "training job name")
    check("RoleArn", params["RoleArn"], "execution role ARN")
    check("S3Uri", params["OutputDataConfig"]["S3OutputPath"], "output path")
    check("S3Uri", params["CheckpointConfig"]["S3Uri"], "checkpoint URI")
    for channel in params.get("InputDataConfig", []):
        check("ChannelName", channel["ChannelName"], "input channel name")
        check("S3Uri", channel["DataSource"]["S3DataSource"]["S3Uri"], f"channel {channel['ChannelName']!r} URI")


class SageMakerComputeBackend(ConfigurableResource):
    """Runs step programs as SageMaker training jobs (managed spot, checkpoints on S3, Pipes through S3).

    Inputs must already be on S3 (the artifact store rooted at `s3://`). Credentials come from the usual AWS
    chain; none are put in the job, its environment or the metadata.
    """

    role_arn: str = Field(default_factory=lambda: os.environ.get("RLHF_SAGEMAKER_ROLE_ARN", ""),
                          description="Execution role of the training jobs (see docs/operations/deploying.md: IAM)")
    bucket: str = Field(default_factory=lambda: os.environ.get("RLHF_SAGEMAKER_BUCKET", ""),
                        description="Bucket for source tarballs, Pipes messages, checkpoints and job outputs")
    prefix: str = Field("rlhf-assets/sagemaker", description="Key prefix under `bucket`")
    region: str | None = Field(default_factory=lambda: os.environ.get("RLHF_SAGEMAKER_REGION") or None,
                               description="AWS region of the jobs; unset follows the AWS configuration")
    image_uri: str | None = Field(None, description="Training image; unset: AWS's PyTorch 2.13 training image in "
                                                    "the job's region (see requirements/sagemaker-image.lock)")
    install_requirements: bool = Field(True, description="Let the job pip-install what the image lacks "
                                       "(requirements/job.lock) at start-up; false for a derived image that holds "
                                       "them (deploy/sagemaker/Dockerfile), for accounts without an index")
    instance_type: str | None = Field(
        default_factory=lambda: os.environ.get("RLHF_SAGEMAKER_INSTANCE_TYPE") or None,
        description="Override the preset's training instance type (e.g. ml.g5.2xlarge); steps that need one GPU "
        "or none keep the preset's instance for them",
    )
    use_spot: bool = Field(True, description="Managed spot training; resumes from /opt/ml/checkpoints")
    max_runtime_seconds: int = Field(5 * 24 * 3600, ge=60, description="StoppingCondition.MaxRuntimeInSeconds")
    max_wait_seconds: int = Field(7 * 24 * 3600, ge=60, description="Spot: runtime plus waiting for capacity")
    volume_size_gb: int = Field(200, ge=1, description="EBS volume per instance (checkpoints, the model, channels)")
    poll_interval_seconds: float = Field(30.0, gt=0, description="How often describe_training_job is called")
    message_interval_seconds: float = Field(10.0, gt=0, description="How often Pipes messages are read from S3")
    prices_usd_per_hour: dict[str, float] = Field(default_factory=dict, description="Overrides of the price table")
    capacity_retries: int = Field(3, ge=0, description="Retries (from the checkpoint) when no capacity is available")
    capacity_retry_seconds: float = Field(600.0, ge=0, description="Wait before such a retry")
    orphans: Literal["adopt", "stop"] = Field(
        "adopt", description="A job doing the same work whose run is over (its worker was killed): wait for it "
        "(adopt), or stop it and start a new job that resumes from its checkpoints (stop)")
    keep_checkpoints: bool = Field(False, description="Keep a job's checkpoint prefix after its output is "
                                   "published (deleted by default: a ZeRO-2 GPT-J checkpoint is ~90 GB)")
    settings: AccountSettings = Field(default_factory=AccountSettings,
                                      description="What an enterprise account requires of every job (VPC, keys, "
                                                  "tags, isolation)")

    def client(self, service: str) -> Any:
        """A boto3 client of this backend's region, with botocore's standard retries."""
        try:
            return boto3.client(service, region_name=self.region, config=RETRIES)
        except NoRegionError:
            raise Failure(description="no AWS region configured: set AWS_DEFAULT_REGION or the sagemaker resource's "
                                      "region") from None

    def resolved_image(self, region: str) -> str:
        """The configured image, or the default training image in `region`'s registry."""
        if self.image_uri:
            return self.image_uri
        try:
            return default_image_uri(region)
        except ImageNotInRegion as error:
            raise Failure(description=str(error)) from None

    def training_job_params(self, *, job_name: str, request: StepLaunch, input_uris: dict[str, str], code_uri: str,
                            checkpoint_uri: str, region: str,
                            tags: list[dict[str, str]] | None = None) -> dict[str, Any]:
        """`create_training_job` arguments for one step (the Pipes bootstrap is added by the client).

        `input_uris` are the inputs' S3 locations (resolved in the artifact store). Each channel's recorded
        content hash travels in the environment, so the step re-hashes what SageMaker downloaded before use.
        `tags` identify the work and the run (`jobs.JobIdentity.tags`), beside the account's own.
        """
        if not self.role_arn or not self.bucket:
            raise Failure(description="the SageMaker backend needs a role and a bucket: set RLHF_SAGEMAKER_ROLE_ARN "
                                      "and RLHF_SAGEMAKER_BUCKET (or the `compute.sagemaker` resource config)")
        tags = tags or []
        isolated = self.isolated(request)
        submit = (f"{CONTAINER_ROOT}/input/data/{SOURCE_CHANNEL}/{Path(split_s3(code_uri)[1]).name}" if isolated
                  else code_uri)
        params: dict[str, Any] = {
            "TrainingJobName": job_name,
            "RoleArn": self.role_arn,
            "AlgorithmSpecification": {"TrainingImage": self.resolved_image(region), "TrainingInputMode": "File"},
            "HyperParameters": {"sagemaker_program": json.dumps(ENTRY_POINT),
                                "sagemaker_submit_directory": json.dumps(submit),
                                "sagemaker_region": json.dumps(region)},
            "OutputDataConfig": {"S3OutputPath": f"s3://{self.bucket}/{self.prefix}/output", "CompressionType": "NONE"},
            "ResourceConfig": {"InstanceType": self.instance_for(request),
                               "InstanceCount": request.instance_count, "VolumeSizeInGB": self.volume_size_gb},
            "StoppingCondition": {"MaxRuntimeInSeconds": self.max_runtime_seconds},
            "CheckpointConfig": {"S3Uri": checkpoint_uri, "LocalPath": str(CONTAINER_CHECKPOINT_DIR)},
            "Environment": {STEP_ENV: request.step, NUM_PROCESSES_ENV: str(request.num_processes),
                            ACCELERATE_CONFIG_ENV: request.accelerate_config or "",
                            PIPES_TRANSPORT_ENV: PIPES_TRANSPORT_SYNCED if isolated else PIPES_TRANSPORT_S3,
                            CHECKPOINT_ENV: str(CONTAINER_CHECKPOINT_DIR),
                            **{input_hash_env(name): manifest.content_hash
                               for name, manifest in request.inputs.items()},
                            **({} if request.step in REACHES_OUTSIDE else OFFLINE_ENVIRONMENT)},
            "EnableManagedSpotTraining": self.use_spot,
            "Tags": [*self.settings.job_tags(), *tags],
        }
        channels = {name: input_uris[name] for name in request.inputs}
        if isolated:  # what an isolated container cannot fetch itself comes as channels, downloaded by SageMaker
            channels[SOURCE_CHANNEL] = code_uri.rsplit("/", 1)[0]
            channels[PIPES_CONTEXT_CHANNEL] = f"s3://{self.bucket}/{self.context_prefix(job_name)}"
        if channels:  # SageMaker takes no InputDataConfig rather than an empty one (a hub snapshot has none)
            params["InputDataConfig"] = [
                {"ChannelName": name, "DataSource": {"S3DataSource": {
                    "S3DataType": "S3Prefix", "S3Uri": channels[name].rstrip("/") + "/",
                    "S3DataDistributionType": "FullyReplicated"}}}
                for name in sorted(channels)
            ]
        if self.use_spot:
            params["StoppingCondition"]["MaxWaitTimeInSeconds"] = max(self.max_wait_seconds, self.max_runtime_seconds)
        self.settings.apply(params, isolated=isolated)
        return params

    def isolated(self, request: StepLaunch) -> bool:
        """Whether the step's job runs network-isolated: every step when the account asks for it, except the
        steps that stage outside sources (the hub), which cannot work without a network."""
        return self.settings.network_isolation and request.step not in REACHES_OUTSIDE

    def context_prefix(self, job_name: str) -> str:
        return f"{self.prefix}/pipes/context/{job_name}"

    def instance_for(self, request: StepLaunch) -> str:
        """The request's instance, or the configured override for a training step."""
        if self.instance_type and request.hardware == Hardware.TRAINING.value:
            return self.instance_type
        return request.instance_type

    def check_bucket(self, s3: Any) -> None:
        """Fail clearly, before a job exists, when the bucket is missing or not ours to use."""
        try:  # a listing of our prefix: needs exactly the s3:ListBucket the policy grants
            s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/", MaxKeys=1)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            raise Failure(description=f"SageMaker bucket s3://{self.bucket} is not usable ({code}: "
                                      f"{error.response.get('Error', {}).get('Message') or 'no access'}); "
                                      "check RLHF_SAGEMAKER_BUCKET and the IAM policy "
                                      "(docs/operations/deploying.md)") from None

    def code_uri(self, tarball: bytes) -> str:
        """Where the source tarball lives: keyed by its hash, so unchanged code is stored once."""
        return f"s3://{self.bucket}/{self.prefix}/code/{hashlib.sha256(tarball).hexdigest()[:16]}/sourcedir.tar.gz"

    def run_step(self, context: AssetExecutionContext, request: StepLaunch, store: ArtifactStore) -> StepRun:
        """Run one step as a training job; its output stays on S3, described by the step, for adoption.

        The job is found before it is made: an in-progress job doing the same work is adopted (or stopped, see
        `orphans`), another live run's is refused, and the checkpoint prefix is leased to one job at a time.
        """
        input_uris = {name: store.resolve(manifest.uri) for name, manifest in request.inputs.items()}
        not_on_s3 = {name: uri for name, uri in input_uris.items() if not uri.startswith("s3://")}
        if not_on_s3:
            raise Failure(description=f"SageMaker reads its inputs from S3, but {sorted(not_on_s3)} are local: "
                                      "root the artifact store on S3 (RLHF_ARTIFACT_ROOT=s3://bucket/prefix)")
        problem = self.settings.problem(self.instance_for(request), install_requirements=self.install_requirements)
        if problem:
            raise Failure(description=f"SageMaker settings: {problem}")
        s3, sagemaker, logs = (self.client(name) for name in ("s3", "sagemaker", "logs"))
        region = sagemaker.meta.region_name
        identity = JobIdentity(asset=request.asset,
                               work=work_key(request.asset, request.resume_key, request.code_version),
                               run_id=context.run_id, attempt=context.retry_number)
        checkpoint_key = f"{self.prefix}/checkpoints/{request.asset}/{hash_json(request.resume_key)[:16]}"
        tarball = source_tarball(with_requirements=self.install_requirements)
        params = self.training_job_params(job_name=identity.name, request=request, input_uris=input_uris,
                                          code_uri=self.code_uri(tarball), checkpoint_uri=f"s3://{self.bucket}/"
                                          f"{checkpoint_key}", region=region, tags=identity.tags())
        validate_request(params, sagemaker.meta.service_model)
        self.check_bucket(s3)
        running = running_job_for(sagemaker, identity, context.instance)
        ours = running is not None and running.get(RUN_ID_TAG) == identity.run_id
        adopt = running is not None and running["status"] == "InProgress" and (ours or self.orphans == "adopt")
        if running is not None and not adopt:  # stopping already, or to be stopped: a new job resumes after it
            context.log.warning(f"training job {running['name']} of run {running.get(RUN_ID_TAG)} is "
                                f"{running['status']}: stopping it; a new job resumes from its checkpoints")
            stop_and_wait(sagemaker, running["name"], poll=self.poll_interval_seconds)
        job_name = running["name"] if adopt and running else identity.name
        s3.put_object(Bucket=self.bucket, Key=split_s3(self.code_uri(tarball))[1], Body=tarball)
        if self.isolated(request):  # context through a channel, messages through the synced checkpoint directory
            synced = f"{SYNCED_MESSAGES_DIR}/{job_name}"
            injector: PipesContextInjector = ChannelContextInjector(bucket=self.bucket, client=s3,
                                                                    key_prefix=self.context_prefix(job_name))
            reader = RankedS3MessageReader(bucket=self.bucket, client=s3, world_size=request.world_size,
                                           key_prefix=f"{checkpoint_key}/{synced}", synced_dir=synced,
                                           interval=self.message_interval_seconds)
        else:
            injector = PipesS3ContextInjector(bucket=self.bucket, client=s3, key_prefix=f"{self.prefix}/pipes/context/")
            reader = RankedS3MessageReader(bucket=self.bucket, client=s3, world_size=request.world_size,
                                           key_prefix=f"{self.prefix}/pipes/messages/{job_name}",
                                           interval=self.message_interval_seconds)
        client = PipesSageMakerClient(
            context_injector=injector, message_reader=reader, client=sagemaker, logs_client=logs,
            poll_interval=self.poll_interval_seconds, prices=self.prices_usd_per_hour,
            capacity_retries=self.capacity_retries, capacity_retry_seconds=self.capacity_retry_seconds,
        )
        lease = self.lease(s3, checkpoint_key)
        invocation = client.run(context=context, create_training_job_params={**params, "TrainingJobName": job_name},
                                extras={"request": request.wire}, adopt=adopt, lease=lease)
        metadata = dict(invocation.get_materialize_result().metadata or {})
        return StepRun(output_uri=f"{params['OutputDataConfig']['S3OutputPath']}/{job_name}/output/model",
                       description=output_description(invocation.get_custom_messages(), request.step),
                       metadata=metadata, published=[] if self.keep_checkpoints else [
                           lambda: self.delete_checkpoints(context, s3, sagemaker, checkpoint_key, identity)])

    def lease(self, s3: Any, checkpoint_key: str) -> CheckpointLease:
        """The lease object of a checkpoint prefix (beside the checkpoints: SageMaker restores that prefix)."""
        return CheckpointLease(s3, self.bucket, checkpoint_key.replace("/checkpoints/", "/leases/", 1) + ".json")

    def delete_checkpoints(self, context: AssetExecutionContext, s3: Any, sagemaker: Any, checkpoint_key: str,
                           identity: JobIdentity) -> None:
        """Delete a published job's checkpoints, holding the prefix's lease meanwhile (a job that has started on
        the same prefix since keeps them). A failure is logged, not raised: the output is already published."""
        lease = self.lease(s3, checkpoint_key)
        try:
            lease.acquire(f"{identity.name}-cleanup", identity.run_id, sagemaker, context.instance)
        except Failure as busy:
            context.log.warning(f"checkpoints kept: {busy.description}")
            return
        try:
            deleted = delete_prefix(s3, self.bucket, checkpoint_key + "/")
            context.log.info(f"deleted {deleted} checkpoint objects under s3://{self.bucket}/{checkpoint_key}/ "
                             "(keep_checkpoints keeps them)")
        except (ClientError, OSError) as error:
            context.log.warning(f"could not delete the checkpoints under s3://{self.bucket}/{checkpoint_key}/ "
                                f"({error}); delete them by hand, the output is published")
        finally:
            lease.release()


def stop_and_wait(sagemaker: Any, name: str, *, poll: float) -> None:
    """Stop a job (one already ending is left to end) and wait until it has, so its checkpoints are final."""
    try:
        sagemaker.stop_training_job(TrainingJobName=name)
    except ClientError:  # it ended, or is stopping, between the listing and the stop
        if job_status(sagemaker, name) in ("InProgress",):
            raise
    wait_until_ended(sagemaker, name, poll=poll, timeout=3600)


def delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    """Delete every object under `prefix` (a finished job's checkpoints); the number deleted. On a versioned
    bucket this leaves noncurrent versions, which the bucket's lifecycle rule must expire
    (docs/operations/deploying.md)."""
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise OSError(f"{len(answer['Errors'])} objects not deleted, e.g. {first.get('Key')}: "
                              f"{first.get('Code')}")
            deleted += len(keys)
    return deleted
