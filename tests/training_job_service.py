"""SageMaker's training-job lifecycle, answered on botocore's event hooks, for what moto 5.2.5 cannot do.

moto accepts a second `CreateTrainingJob` with a name in use (AWS answers `ResourceInUse`), reports every job
`Completed` at once and implements no `StopTrainingJob`. This double answers the SageMaker calls the backend makes
(create, describe, list, tags, stop) the way the service does, from a state file, so a killed process and the
process that re-executes its work see the same jobs. S3 stays the moto server: when a job completes, the double
writes what the step in the container would (its Pipes messages, ending with the output description) under the
job's message prefix. A test double for AWS only.
"""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from dagster_pipes import decode_param

from rlhf_assets.contract import OUTPUT_DESCRIPTION_MESSAGE, PIPES_RANK_PREFIX

OPERATIONS = ("CreateTrainingJob", "DescribeTrainingJob", "ListTrainingJobs", "ListTags", "StopTrainingJob")
DESCRIPTION = {"content_hash": "0" * 64, "sizes": {"model.safetensors": 4}}


def _message(method: str, **params: Any) -> str:
    return json.dumps({"__dagster_pipes_version": "0.1", "method": method, "params": params})


class TrainingJobService:
    """Jobs by name in `state_file`. A job runs for `polls` describes, then completes (or as scripted)."""

    def __init__(self, state_file: Path, *, polls: int = 2, kill_on_poll: int | None = None,
                 lose_create_response: bool = False, listing_lags: bool = False) -> None:
        """`kill_on_poll`: SIGKILL this process at that describe (a worker killed mid-job);
        `lose_create_response`: the create reaches SageMaker but its answer is lost, so botocore resends it and
        the caller sees the resend's `ResourceInUse`; `listing_lags`: ListTrainingJobs does not show jobs yet
        (its eventual consistency), so only the lease stands between two runs."""
        self.state_file, self.polls, self.kill_on_poll = state_file, polls, kill_on_poll
        self.lose_create_response, self.listing_lags = lose_create_response, listing_lags
        self.params: dict[str, Any] = {}
        if not state_file.exists():
            self._save({"jobs": {}, "calls": []})

    # ---- state ------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())

    def _save(self, state: dict[str, Any]) -> None:
        self.state_file.write_text(json.dumps(state))

    def calls(self, operation: str) -> list[dict[str, Any]]:
        return [call["params"] for call in self.state()["calls"] if call["operation"] == operation]

    def add_job(self, name: str, tags: dict[str, str], status: str = "InProgress") -> None:
        """A job started elsewhere (by another run), running until stopped."""
        state = self.state()
        state["jobs"][name] = {"params": {"TrainingJobName": name, "Environment": {},
                                          "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]},
                               "status": status, "polls": 0, "forever": True}
        self._save(state)

    # ---- botocore hooks ------------------------------------------------------------------------------------
    def install(self) -> TrainingJobService:
        """Answer SageMaker calls of clients created from now on by boto3's default session."""
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        events = boto3.DEFAULT_SESSION.events
        for operation in OPERATIONS:
            events.register(f"before-parameter-build.sagemaker.{operation}", self._remember)
            events.register(f"before-call.sagemaker.{operation}", self._answer)
        return self

    def _remember(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.params = json.loads(json.dumps(params, default=str))

    def _answer(self, model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        state = self.state()
        state["calls"].append({"operation": model.name, "params": self.params})
        status, parsed = getattr(self, f"_{model.name}")(state, self.params)
        self._save(state)
        return AWSResponse("https://sagemaker.us-east-1.amazonaws.com", status, {}, None), parsed

    @staticmethod
    def _error(code: str, message: str, status: int = 400) -> tuple[int, dict[str, Any]]:
        return status, {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}

    @staticmethod
    def _arn(name: str) -> str:
        return f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}"

    def _CreateTrainingJob(self, state: dict[str, Any], params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = params["TrainingJobName"]
        if name in state["jobs"]:
            return self._error("ResourceInUse", "Training job names must be unique within an AWS account and region, "
                               f"and a training job with this name already exists ({self._arn(name)})")
        state["jobs"][name] = {"params": params, "status": "InProgress", "polls": 0, "forever": False}
        if self.lose_create_response:  # the first call made the job; the caller only sees botocore's resend
            self.lose_create_response = False
            return self._CreateTrainingJob(state, params)
        return 200, {"TrainingJobArn": self._arn(name)}

    def _DescribeTrainingJob(self, state: dict[str, Any], params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = params["TrainingJobName"]
        job = state["jobs"].get(name)
        if job is None:
            return self._error("ValidationException", f"Requested resource not found: {name}")
        job["polls"] += 1
        describes = sum(1 for call in state["calls"] if call["operation"] == "DescribeTrainingJob")
        if self.kill_on_poll is not None and describes >= self.kill_on_poll:
            self._save(state)
            os.kill(os.getpid(), signal.SIGKILL)
        if job["status"] == "Stopping":
            job["status"] = "Stopped"
        elif job["status"] == "InProgress" and not job["forever"] and job["polls"] > self.polls:
            job["status"] = "Completed"
            self._finish(job["params"])
        return 200, {"TrainingJobName": name, "TrainingJobArn": self._arn(name), "TrainingJobStatus": job["status"],
                     "SecondaryStatus": {"InProgress": "Training", "Stopping": "Stopping"}.get(job["status"],
                                                                                           job["status"]),
                     "AlgorithmSpecification": {"TrainingInputMode": "File"},
                     "ModelArtifacts": {"S3ModelArtifacts": "s3://x/y"},
                     "ResourceConfig": job["params"].get("ResourceConfig",
                                                         {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1,
                                                          "VolumeSizeInGB": 50}),
                     "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
                     "CreationTime": datetime(2026, 12, 6, tzinfo=UTC), "TrainingTimeInSeconds": 60,
                     "BillableTimeInSeconds": 60}

    def _ListTrainingJobs(self, state: dict[str, Any], params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.listing_lags:
            return 200, {"TrainingJobSummaries": []}
        contains = params.get("NameContains", "")
        found = [{"TrainingJobName": name, "TrainingJobArn": self._arn(name), "TrainingJobStatus": job["status"],
                  "CreationTime": datetime(2026, 12, 6, tzinfo=UTC)}
                 for name, job in state["jobs"].items() if contains in name
                 and params.get("StatusEquals", job["status"]) == job["status"]]
        start = int(params.get("NextToken", 0))  # one job a page, so the callers' paging is exercised
        page: dict[str, Any] = {"TrainingJobSummaries": found[start:start + 1]}
        if start + 1 < len(found):
            page["NextToken"] = str(start + 1)
        return 200, page

    def _ListTags(self, state: dict[str, Any], params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = params["ResourceArn"].rsplit("/", 1)[1]
        return 200, {"Tags": state["jobs"][name]["params"].get("Tags", [])}

    def _StopTrainingJob(self, state: dict[str, Any], params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        job = state["jobs"][params["TrainingJobName"]]
        if job["status"] != "InProgress":
            return self._error("ValidationException", f"The request was rejected because the training job is in "
                               f"status {job['status']}.")
        job["status"] = "Stopping"
        return 200, {}

    def _finish(self, params: dict[str, Any]) -> None:
        """What the step in the container leaves on S3 when it ends: its Pipes messages, as one rank."""
        encoded = params.get("Environment", {}).get("DAGSTER_PIPES_MESSAGES")
        if encoded is None:
            return
        where = decode_param(encoded)
        lines = [_message("opened", extras={}), _message("log", message="step ran in the job", level="INFO"),
                 _message("report_custom_message", payload={OUTPUT_DESCRIPTION_MESSAGE: DESCRIPTION}),
                 _message("closed")]
        boto3.client("s3").put_object(Bucket=where["bucket"], Body="\n".join(lines).encode(),
                                      Key=f"{where['key_prefix']}/{PIPES_RANK_PREFIX}0/attempt-1/1.json")
