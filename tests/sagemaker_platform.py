"""The SageMaker *platform* around a training job, played by the tests; the container is the real toolkit.

moto records `CreateTrainingJob` but runs nothing. Registered on boto3's default session, this harness does
what the SageMaker service does with the captured request, and nothing the container does:
- lays out `/opt/ml` in a scratch directory (`SAGEMAKER_BASE_DIR`): `input/config/hyperparameters.json`,
  `resourceconfig.json` and `inputdataconfig.json` written from the request, channels downloaded from S3;
- starts the training image's entry logic, the `sagemaker-training` toolkit's `train` with the PyTorch toolkit
  module (`SAGEMAKER_TRAINING_MODULE`, as the image's Dockerfile sets it), in the job's `Environment`. The toolkit
  itself downloads our source tarball from S3, pip-installs its `requirements.txt`, runs `rlhf_entry.py` and
  writes or keeps the failure file;
- for a network-isolated job, restores `CheckpointConfig.S3Uri` into `/opt/ml/checkpoints` before the container
  starts and uploads what the container left there afterwards (SageMaker syncs it while any job runs; only an
  isolated job's Pipes messages travel that way, so only there is the sync played: it costs a minute over the
  recipe's jobs);
- uploads `/opt/ml/model` uncompressed to `<S3OutputPath>/<job>/output/model/` (`CompressionType: NONE`), in 5 MiB
  parts above 5 MiB, the container's output to CloudWatch Logs, and records the failure file (moto cannot report
  a Failed job: tests read `failures`);
- runs a job with `EnableNetworkIsolation` with no AWS credentials and no network at all: every call the
  container makes fails, so only what SageMaker moves for it (channels, checkpoints, model) gets through.
`/opt/ml` is relocated to a scratch directory, and `/opt/ml/...` paths in the hyperparameters with it.
`SM_STUDIO_LOCAL_MODE=true` skips the toolkit's DNS wait for `algo-1` (a name only SageMaker's network resolves).
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig

from rlhf_assets.compute.hardware import REACHES_OUTSIDE
from rlhf_assets.contract import CHECKPOINT_ENV, STEP_ENV

PARTS = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)  # S3's smallest part


class SageMakerPlatform:
    """Runs each created training job through the toolkit synchronously; remembers requests and outcomes."""

    def __init__(self, scratch: Path, credentials: dict[str, str] | None = None,
                 outside: dict[str, str] | None = None) -> None:
        """`credentials` (access key id and secret) are the job role's: SageMaker and the container act as it.

        `outside` cuts the jobs' network, as a VPC without internet would: no package index for pip, no hub
        (an empty cache, offline), except for the steps that stage outside sources (`REACHES_OUTSIDE`), whose jobs
        get `outside` (the hub mirror's environment) as their hub.
        """
        self.scratch, self.credentials, self.outside = scratch, credentials or {}, outside
        self.requests: list[dict[str, Any]] = []
        self.exit_codes: list[int] = []
        self.logs: list[str] = []
        self.failures: list[str | None] = []
        self.seconds: list[float] = []  # each job's wall time in the container, for the slowest-jobs report

    def install(self) -> None:
        """Hook into clients created from now on by boto3's default session."""
        boto3.setup_default_session()
        boto3.DEFAULT_SESSION.events.register("provide-client-params.sagemaker.CreateTrainingJob", self._capture)
        boto3.DEFAULT_SESSION.events.register("after-call.sagemaker.CreateTrainingJob", self._run)
        boto3.DEFAULT_SESSION.events.register("after-call.sagemaker.DescribeTrainingJob", self._status)

    def __enter__(self) -> "SageMakerPlatform":
        self.install()
        return self

    def __exit__(self, *_: object) -> None:
        boto3.setup_default_session()  # a fresh default session carries no hooks

    def _capture(self, params: dict[str, Any], **_: Any) -> None:
        """Remember the request (and keep it in the scratch folder, for a test whose platform runs in a CLI)."""
        self.requests.append(json.loads(json.dumps(params)))
        kept = self.scratch / "requests" / f"{len(self.requests)}.json"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps(self.requests[-1]))

    def _status(self, parsed: dict[str, Any], **_: Any) -> None:
        """What SageMaker reports for a job whose container failed: `Failed`, the failure file as the reason."""
        names = [job["TrainingJobName"] for job in self.requests]
        name = parsed.get("TrainingJobName")
        if name in names and self.failures[names.index(name)] is not None:
            parsed.update(TrainingJobStatus="Failed", SecondaryStatus="Failed",
                          FailureReason=self.failures[names.index(name)])

    def _client(self, service: str) -> Any:
        if not self.credentials:
            return boto3.client(service)
        return boto3.client(service, aws_access_key_id=self.credentials["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.credentials["AWS_SECRET_ACCESS_KEY"])

    def _download(self, uri: str, target: Path) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        s3 = self._client("s3")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                path = target / item["Key"][len(prefix):].lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(path))

    def _layout(self, job: dict[str, Any], base: Path) -> None:
        shutil.rmtree(base, ignore_errors=True)
        for directory in ("input/config", "model", "output/data", "code", "checkpoints"):
            (base / directory).mkdir(parents=True, exist_ok=True)
        config = base / "input" / "config"
        hyperparameters = {key: value.replace('"/opt/ml/', f'"{base}/')
                           for key, value in job["HyperParameters"].items()}
        (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
        (config / "resourceconfig.json").write_text(json.dumps({
            "current_host": "algo-1", "hosts": [f"algo-{i + 1}" for i in range(job["ResourceConfig"]["InstanceCount"])],
            "current_instance_type": job["ResourceConfig"]["InstanceType"], "network_interface_name": "eth0"}))
        channels = {c["ChannelName"]: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
                    for c in job.get("InputDataConfig", [])}
        (config / "inputdataconfig.json").write_text(json.dumps(channels))
        for channel in job.get("InputDataConfig", []):
            self._download(channel["DataSource"]["S3DataSource"]["S3Uri"], base / "input" / "data" /
                           channel["ChannelName"])
        if job.get("EnableNetworkIsolation"):
            self._download(job["CheckpointConfig"]["S3Uri"], base / "checkpoints")

    def _upload(self, directory: Path, uri: str, kms_key: str | None = None) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        s3 = self._client("s3")
        encryption = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key} if kms_key else {}
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(directory).as_posix()}",
                           Config=PARTS, ExtraArgs=encryption)

    def _run(self, **_: Any) -> None:
        job = self.requests[-1]
        name = job["TrainingJobName"]
        base = self.scratch / name / "opt" / "ml"
        self._layout(job, base)
        checkpoints = base / "checkpoints"
        env = {**os.environ, **job["Environment"], "SAGEMAKER_BASE_DIR": str(base), "TRAINING_JOB_NAME": name,
               "SAGEMAKER_TRAINING_MODULE": "sagemaker_pytorch_container.training:main",
               "SM_STUDIO_LOCAL_MODE": "true", "PYTHONUNBUFFERED": "1",
               CHECKPOINT_ENV: str(checkpoints),  # the container's /opt/ml/checkpoints, relocated with /opt/ml
               **self.credentials}
        env.pop("PYTHONPATH", None)
        if self.outside is not None:
            env.update(self.network_cut(job["Environment"][STEP_ENV]))
        if job.get("EnableNetworkIsolation"):
            env = {key: value for key, value in env.items() if not key.startswith("AWS_")}
            env.update(self.network_cut(job["Environment"][STEP_ENV]), AWS_ENDPOINT_URL="http://127.0.0.1:9",
                       AWS_EC2_METADATA_DISABLED="true", NO_PROXY="")
        train = Path(sys.executable).with_name("train")
        started = time.monotonic()
        done = subprocess.run([str(train)], env=env, cwd=base, capture_output=True, text=True, timeout=1200)
        self.seconds.append(time.monotonic() - started)
        self.exit_codes.append(done.returncode)
        self.logs.append(done.stdout + done.stderr)
        failure = base / "output" / "failure"
        self.failures.append(failure.read_text() if failure.exists() else None)
        self._to_cloudwatch(name, done.stdout + done.stderr)
        if job.get("EnableNetworkIsolation"):
            self._upload(checkpoints, job["CheckpointConfig"]["S3Uri"])
        assert job["OutputDataConfig"].get("CompressionType") == "NONE", "model output must not be gzipped"
        self._upload(base / "model", f"{job['OutputDataConfig']['S3OutputPath']}/{name}/output/model",
                     job["OutputDataConfig"].get("KmsKeyId"))  # SageMaker encrypts the output with its key

    def network_cut(self, step: str) -> dict[str, str]:
        """A job's environment without a network: pip has no index, the hub is an empty offline cache (the
        mirror for the steps that stage outside sources)."""
        nowhere = "http://127.0.0.1:9"  # the discard port: nothing listens
        empty = self.scratch / "no-network"
        cut = {"PIP_NO_INDEX": "1", "PIP_INDEX_URL": f"{nowhere}/simple", "PIP_FIND_LINKS": "",
               "HF_ENDPOINT": nowhere, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(empty / "hub"),
               "TORCH_HOME": str(empty / "torch"), "HTTP_PROXY": nowhere, "HTTPS_PROXY": nowhere,
               "NO_PROXY": "127.0.0.1,localhost"}  # S3 (the moto server) stays reachable, as through a VPC endpoint
        return {**cut, **(self.outside if step in REACHES_OUTSIDE and self.outside else {})}

    def _to_cloudwatch(self, name: str, output: str) -> None:
        """SageMaker sends the container's stdout/stderr to /aws/sagemaker/TrainingJobs, `<job>/algo-1-<time>`."""
        logs = self._client("logs")
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
        stream = f"{name}/algo-1-{int(time.time())}"
        logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream)
        now = int(time.time() * 1000)
        events = [{"timestamp": now, "message": line} for line in output.splitlines() if line.strip()][-500:]
        if events:
            logs.put_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream, logEvents=events)
