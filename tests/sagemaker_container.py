"""The SageMaker container, played by the tests: moto records training jobs but never runs them.

Registered on boto3's default session, it sees every `CreateTrainingJob` request (moto's
`describe_training_job` does not echo `Environment`, so the request itself is read) and, before moto answers
`Completed`, does what the real container would: downloads the input channels from S3, runs the step program
under the container contract with the job's environment (the Pipes bootstrap and S3 transport included, so
messages really travel through S3), and uploads `/opt/ml/model` as `model.tar.gz` to the job's output path.
"""

import contextlib
import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import boto3

from rlhf_assets.compute.container import ContainerLayout
from rlhf_assets.compute.launch import step_command
from rlhf_assets.presets import PROJECT_ROOT


class FakeSageMakerContainer:
    """Runs each created training job's step synchronously; remembers requests and exit codes."""

    def __init__(self, scratch: Path) -> None:
        self.scratch, self.requests, self.exit_codes, self.logs = scratch, [], [], []

    def install(self) -> None:
        """Hook into clients created from now on by boto3's default session."""
        boto3.setup_default_session()
        boto3.DEFAULT_SESSION.events.register("provide-client-params.sagemaker.CreateTrainingJob", self._capture)
        boto3.DEFAULT_SESSION.events.register("after-call.sagemaker.CreateTrainingJob", self._run)

    def __enter__(self) -> "FakeSageMakerContainer":
        self.install()
        return self

    def __exit__(self, *_: object) -> None:
        boto3.setup_default_session()  # a fresh default session carries no hooks

    def _capture(self, params: dict[str, Any], **_: Any) -> None:
        self.requests.append(json.loads(json.dumps(params)))

    def _download(self, uri: str, target: Path) -> Path:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        s3 = boto3.client("s3")
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
            path = target / item["Key"][len(prefix):].lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        return target

    @staticmethod
    def _to_cloudwatch(name: str, output: str) -> None:
        """SageMaker sends the container's stdout/stderr to /aws/sagemaker/TrainingJobs, `<job>/algo-1-<time>`."""
        logs = boto3.client("logs")
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
        stream = f"{name}/algo-1-{int(time.time())}"
        logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream)
        now = int(time.time() * 1000)
        events = [{"timestamp": now, "message": line} for line in output.splitlines() if line.strip()][-500:]
        if events:
            logs.put_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream, logEvents=events)

    def _run(self, **_: Any) -> None:
        job = self.requests[-1]
        name = job["TrainingJobName"]
        root = self.scratch / name
        channels = {c["ChannelName"]: self._download(c["DataSource"]["S3DataSource"]["S3Uri"], root / "s3" /
                                                     c["ChannelName"]) for c in job["InputDataConfig"]}
        layout = ContainerLayout.create(root / "opt-ml", root / "checkpoints", channels)
        env = {**os.environ, **layout.environment(list(channels), num_gpus=0), **job["Environment"],
               "RLHF_CHECKPOINT_DIR": str(layout.checkpoint_dir)}
        command = step_command(job["Environment"]["RLHF_STEP"], 1, None, env)
        done = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
        self.exit_codes.append(done.returncode)
        self.logs.append(done.stderr)
        self._to_cloudwatch(name, done.stderr)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(layout.model_dir, arcname=".")
        bucket, _, prefix = job["OutputDataConfig"]["S3OutputPath"].removeprefix("s3://").partition("/")
        boto3.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/{name}/output/model.tar.gz",
                                      Body=buffer.getvalue())
