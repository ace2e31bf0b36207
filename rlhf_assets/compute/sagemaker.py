"""`PipesSageMakerClient`: a SageMaker training job as a Dagster Pipes external process.

Shaped like dagster-aws's Pipes clients (ECS, EMR Serverless, Glue): `run(*, context, create_training_job_params,
extras=None)` opens a Pipes session, puts the session's bootstrap variables into the job's `Environment`, creates
the job, polls `describe_training_job` until it ends, lets the message reader collect what the step reported
(logs, metadata) and returns a completed invocation whose metadata carries the job's identity, times and an
estimated cost. A Dagster run that is cancelled stops the job (`stop_training_job`) when `forward_termination`.
A `Failed` job raises with the job's own `FailureReason`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import boto3
from dagster import AssetExecutionContext, ConfigurableResource, Failure, MetadataValue, PipesClient, RetryRequested
from dagster._core.definitions.resource_annotation import TreatAsResourceParam
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.execution.context.compute import OpExecutionContext
from dagster._core.pipes.client import PipesClientCompletedInvocation, PipesContextInjector, PipesMessageReader
from dagster._core.pipes.utils import open_pipes_session
from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader
from pydantic import Field

from rlhf_assets.compute.launch import PACKAGE_ROOT
from rlhf_assets.compute.local import StepRun
from rlhf_assets.steps.runtime import PIPES_TRANSPORT_ENV
from rlhf_assets.storage import hash_json

# On-demand list prices (USD per instance-hour, us-east-1, SageMaker training); override with `prices=`.
LIST_PRICES_USD_PER_HOUR = {
    "ml.p4d.24xlarge": 37.688,
    "ml.p4de.24xlarge": 47.11,
    "ml.p5.48xlarge": 113.07,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.12xlarge": 7.09,
    "ml.g5.48xlarge": 20.36,
    "ml.m5.xlarge": 0.23,
}
# Hugging Face PyTorch training image (us-east-1); any image with torch + transformers + accelerate works.
DEFAULT_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:"
    "2.5.1-transformers4.49.0-gpu-py311-cu124-ubuntu22.04"
)
ENTRY_POINT = "rlhf_entry.py"
CONTAINER_CHECKPOINT_DIR = "/opt/ml/checkpoints"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
# Failure reasons that mean "no capacity right now" (spot or on-demand), worth retrying from the checkpoint.
CAPACITY_ERRORS = ("CapacityError", "InsufficientInstanceCapacity", "Unable to provision requested ML compute capacity")
# What the training toolkit pip-installs in the container before the entry point runs.
CONTAINER_REQUIREMENTS = (
    "dagster-pipes==1.13.27", "boto3", "pydantic>=2.7", "transformers>=4.56", "accelerate>=1.10", "trl>=1.0",
    "peft>=0.17", "datasets>=4.0", "safetensors>=0.4", "pandas>=2.2", "pyarrow>=17", "detoxify>=0.5.2",
    "matplotlib>=3.8", "deepspeed>=0.16",
)


def estimate_cost(description: dict[str, Any], prices: dict[str, float]) -> dict[str, Any]:
    """Billable and training seconds, the spot saving and the cost at `prices` of a finished job's description.

    SageMaker bills `BillableTimeInSeconds` per instance; with managed spot it is below the training time, and
    the saving is the share not billed. The price is per instance-hour at on-demand rates (spot is billed at a
    discount SageMaker does not report, so the estimate is an upper bound for spot jobs).
    """
    resources = description["ResourceConfig"]
    instance_type, count = resources["InstanceType"], int(resources.get("InstanceCount", 1))
    training = int(description.get("TrainingTimeInSeconds") or 0)
    billable = int(description.get("BillableTimeInSeconds") or training)
    price = prices.get(instance_type)
    return {
        "instance_type": instance_type,
        "instance_count": count,
        "training_seconds": training,
        "billable_seconds": billable,
        "spot_savings": (1 - billable / training) if training else 0.0,
        "price_usd_per_instance_hour": price,
        "estimated_cost_usd": None if price is None else billable / 3600 * price * count,
    }


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
    ) -> None:
        self.client = client or boto3.client("sagemaker")
        self.logs_client = logs_client or boto3.client("logs")
        self.context_injector, self.message_reader = context_injector, message_reader
        self.poll_interval, self.forward_termination = poll_interval, forward_termination
        self.prices = {**LIST_PRICES_USD_PER_HOUR, **(prices or {})}
        self.capacity_retries, self.capacity_retry_seconds = capacity_retries, capacity_retry_seconds

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def run(  # type: ignore[override]
        self,
        *,
        context: OpExecutionContext | AssetExecutionContext,
        create_training_job_params: dict[str, Any],
        extras: dict[str, Any] | None = None,
    ) -> PipesClientCompletedInvocation:
        """Create the training job with the Pipes bootstrap in its environment and wait for it to finish."""
        with open_pipes_session(context=context, message_reader=self.message_reader,
                                context_injector=self.context_injector, extras=extras) as session:
            params = self._enrich(create_training_job_params, session.get_bootstrap_env_vars(),
                                  session.default_remote_invocation_info)
            name = params["TrainingJobName"]
            response = self.client.create_training_job(**params)
            context.log.info(f"[pipes] SageMaker training job {name} created: {response['TrainingJobArn']}")
            try:
                description = self._wait(context, name)
            except DagsterExecutionInterruptedError:
                if self.forward_termination:
                    context.log.warning(f"[pipes] run interrupted: stopping SageMaker training job {name}")
                    self.client.stop_training_job(TrainingJobName=name)
                raise
            return PipesClientCompletedInvocation(session, metadata=self._metadata(description))

    @staticmethod
    def _enrich(params: dict[str, Any], bootstrap: dict[str, str], tags: dict[str, str]) -> dict[str, Any]:
        environment = {**params.get("Environment", {}), **bootstrap}
        job_tags = [*params.get("Tags", []), *({"Key": k, "Value": v} for k, v in tags.items())]
        return {**params, "Environment": environment, "Tags": job_tags}

    def _forward_logs(self, name: str, seen: set[str]) -> None:
        """Copy the job's new CloudWatch lines (`/aws/sagemaker/TrainingJobs`, `<job>/algo-*`) to stderr.

        Dagster captures stderr as the step's compute log, as dagster-aws's CloudWatch log readers do.
        """
        kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{name}/"}
        try:
            while True:
                page = self.logs_client.filter_log_events(**kwargs)
                for event in page.get("events", []):
                    if event["eventId"] not in seen:
                        seen.add(event["eventId"])
                        print(f"[sagemaker {event['logStreamName']}] {event['message']}", file=sys.stderr, flush=True)
                if not page.get("nextToken"):
                    return
                kwargs["nextToken"] = page["nextToken"]
        except self.logs_client.exceptions.ResourceNotFoundException:
            return  # the log group appears when the first instance starts

    def _wait(self, context: OpExecutionContext | AssetExecutionContext, name: str) -> dict[str, Any]:
        last_status, seen_logs = None, set()
        while True:
            description = self.client.describe_training_job(TrainingJobName=name)
            self._forward_logs(name, seen_logs)
            status = (description["TrainingJobStatus"], description.get("SecondaryStatus"))
            if status != last_status:
                context.log.info(f"[pipes] SageMaker training job {name}: {status[0]} ({status[1]})")
                last_status = status
            if status[0] == "Failed":
                reason = description.get("FailureReason", "no reason given")
                if any(marker in reason for marker in CAPACITY_ERRORS):
                    context.log.warning(f"[pipes] {name}: no capacity ({reason}); retrying from the last checkpoint "
                                        f"in {self.capacity_retry_seconds:.0f}s")
                    raise RetryRequested(max_retries=self.capacity_retries, seconds_to_wait=self.capacity_retry_seconds)
                raise Failure(description=f"SageMaker training job {name} failed: {reason}",
                              metadata={"training_job_name": name})
            if status[0] == "Stopped":
                raise Failure(description=f"SageMaker training job {name} was stopped",
                              metadata={"training_job_name": name})
            if status[0] == "Completed":
                return description
            time.sleep(self.poll_interval)

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
        return metadata


def source_tarball() -> bytes:
    """The step programs as SageMaker's `sagemaker_submit_directory`: the package, the entry point, requirements.

    Deterministic (sorted names, zero mtimes), so unchanged code is uploaded once and keyed by its hash.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))

        package = PACKAGE_ROOT / "rlhf_assets"
        for path in sorted(p for p in package.rglob("*") if p.is_file() and p.suffix in (".py", ".yaml")):
            add(str(path.relative_to(PACKAGE_ROOT)), path.read_bytes())
        add(ENTRY_POINT, (package / "compute" / "sagemaker_entry.py").read_bytes())
        add("requirements.txt", "\n".join(CONTAINER_REQUIREMENTS).encode() + b"\n")
    return buffer.getvalue()


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class SageMakerComputeBackend(ConfigurableResource):
    """Runs step programs as SageMaker training jobs (managed spot, checkpoints on S3, Pipes through S3).

    Inputs must already be on S3 (the artifact store rooted at `s3://`); the job's model output comes back as
    `model.tar.gz` and is unpacked for publishing like a local step's output. Credentials come from the usual
    AWS chain; none are put in the job, its environment or the metadata.
    """

    role_arn: str = Field(default_factory=lambda: os.environ.get("RLHF_SAGEMAKER_ROLE_ARN", ""),
                          description="Execution role of the training jobs (see README: IAM)")
    bucket: str = Field(default_factory=lambda: os.environ.get("RLHF_SAGEMAKER_BUCKET", ""),
                        description="Bucket for source tarballs, Pipes messages, checkpoints and job outputs")
    prefix: str = Field("rlhf-assets/sagemaker", description="Key prefix under `bucket`")
    image_uri: str = Field(DEFAULT_IMAGE, description="Training image (a Hugging Face PyTorch training image)")
    instance_type: str | None = Field(
        default_factory=lambda: os.environ.get("RLHF_SAGEMAKER_INSTANCE_TYPE") or None,
        description="Override the preset's instance type (e.g. ml.g5.2xlarge)",
    )
    use_spot: bool = Field(True, description="Managed spot training; resumes from /opt/ml/checkpoints")
    max_runtime_seconds: int = Field(5 * 24 * 3600, ge=60)
    max_wait_seconds: int = Field(7 * 24 * 3600, ge=60, description="Spot: runtime plus waiting for capacity")
    volume_size_gb: int = Field(200, ge=1)
    poll_interval_seconds: float = Field(30.0, gt=0)
    message_interval_seconds: float = Field(10.0, gt=0, description="How often Pipes messages are read from S3")
    prices_usd_per_hour: dict[str, float] = Field(default_factory=dict, description="Overrides of the price table")
    capacity_retries: int = Field(3, ge=0, description="Retries (from the checkpoint) when no capacity is available")
    capacity_retry_seconds: float = Field(600.0, ge=0, description="Wait before such a retry")

    def training_job_params(
        self,
        *,
        job_name: str,
        step: str,
        inputs: dict[str, str],
        code_uri: str,
        checkpoint_uri: str,
        instance_type: str,
        instance_count: int,
        num_processes: int,
        accelerate_config: str | None,
    ) -> dict[str, Any]:
        """`create_training_job` arguments for one step (the Pipes bootstrap is added by the client)."""
        if not self.role_arn or not self.bucket:
            raise Failure(description="the SageMaker backend needs a role and a bucket: set RLHF_SAGEMAKER_ROLE_ARN "
                                      "and RLHF_SAGEMAKER_BUCKET (or the `compute.sagemaker` resource config)")
        params: dict[str, Any] = {
            "TrainingJobName": job_name,
            "RoleArn": self.role_arn,
            "AlgorithmSpecification": {"TrainingImage": self.image_uri, "TrainingInputMode": "File"},
            "HyperParameters": {"sagemaker_program": json.dumps(ENTRY_POINT),
                                "sagemaker_submit_directory": json.dumps(code_uri)},
            "InputDataConfig": [
                {"ChannelName": name, "DataSource": {"S3DataSource": {
                    "S3DataType": "S3Prefix", "S3Uri": uri.rstrip("/") + "/",
                    "S3DataDistributionType": "FullyReplicated"}}}
                for name, uri in sorted(inputs.items())
            ],
            "OutputDataConfig": {"S3OutputPath": f"s3://{self.bucket}/{self.prefix}/output"},
            "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": instance_count,
                               "VolumeSizeInGB": self.volume_size_gb},
            "StoppingCondition": {"MaxRuntimeInSeconds": self.max_runtime_seconds},
            "CheckpointConfig": {"S3Uri": checkpoint_uri, "LocalPath": CONTAINER_CHECKPOINT_DIR},
            "Environment": {"RLHF_STEP": step, "RLHF_NUM_PROCESSES": str(num_processes),
                            "RLHF_ACCELERATE_CONFIG": accelerate_config or "", PIPES_TRANSPORT_ENV: "s3",
                            "RLHF_CHECKPOINT_DIR": CONTAINER_CHECKPOINT_DIR},
            "EnableManagedSpotTraining": self.use_spot,
        }
        if self.use_spot:
            params["StoppingCondition"]["MaxWaitTimeInSeconds"] = max(self.max_wait_seconds, self.max_runtime_seconds)
        return params

    def upload_source(self, s3: Any) -> str:
        """Upload the source tarball once per content hash; returns its S3 URI."""
        data = source_tarball()
        key = f"{self.prefix}/code/{hashlib.sha256(data).hexdigest()[:16]}/sourcedir.tar.gz"
        s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"

    def run_step(
        self,
        context: AssetExecutionContext,
        *,
        step: str,
        inputs: dict[str, str],
        config: dict[str, Any],
        resume_key: dict[str, Any],
        instance_type: str,
        instance_count: int,
        num_processes: int,
        accelerate_config: str | None,
        scratch_dir: Path,
    ) -> StepRun:
        """Run one step as a training job; its model output is downloaded and unpacked under `scratch_dir`."""
        not_on_s3 = {name: uri for name, uri in inputs.items() if not uri.startswith("s3://")}
        if not_on_s3:
            raise Failure(description=f"SageMaker reads its inputs from S3, but {sorted(not_on_s3)} are local: "
                                      "root the artifact store on S3 (RLHF_ARTIFACT_ROOT=s3://bucket/prefix)")
        asset = context.asset_key.to_python_identifier()
        s3, sagemaker = boto3.client("s3"), boto3.client("sagemaker")
        job_name = f"rlhf-{asset.replace('_', '-')}-{context.run_id[:8]}-{int(time.time())}"[:63]
        params = self.training_job_params(
            job_name=job_name, step=step, inputs=inputs, code_uri=self.upload_source(s3),
            checkpoint_uri=f"s3://{self.bucket}/{self.prefix}/checkpoints/{asset}/{hash_json(resume_key)[:16]}",
            instance_type=self.instance_type or instance_type, instance_count=instance_count,
            num_processes=num_processes,
            accelerate_config=accelerate_config,
        )
        client = PipesSageMakerClient(
            context_injector=PipesS3ContextInjector(bucket=self.bucket, client=s3, key_prefix=f"{self.prefix}/pipes/"),
            message_reader=PipesS3MessageReader(bucket=self.bucket, client=s3,
                                                interval=self.message_interval_seconds),
            client=sagemaker, poll_interval=self.poll_interval_seconds, prices=self.prices_usd_per_hour,
            capacity_retries=self.capacity_retries, capacity_retry_seconds=self.capacity_retry_seconds,
        )
        invocation = client.run(context=context, create_training_job_params=params, extras={"config": config})
        metadata = dict(invocation.get_materialize_result().metadata or {})
        bucket, key = _split_s3(f"{params['OutputDataConfig']['S3OutputPath']}/{job_name}/output/model.tar.gz")
        target = scratch_dir / "sagemaker" / job_name
        target.mkdir(parents=True, exist_ok=True)
        archive = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(target, filter="data")
        return StepRun(model_dir=target, metadata=metadata, scratch=[target])
