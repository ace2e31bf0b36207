"""Which training job does a piece of work, so that no job is ever orphaned or doubled.

A piece of *work* is one asset computed from one set of inputs and config (the request's resume key): its
`work_key` names the checkpoint prefix's lease and is a tag on every job that does it. A *job name* is derived from
(asset, work, run, attempt), so a create that botocore resends after a lost response meets its own job
("already exists") and adopts it, and a retry in the same run gets a new, valid name.

Before a job is created, `running_job_for` looks for an in-progress job doing the same work (its name carries the
work key; its tags say whose run started it):
- started by this run (a resumed run worker) or by a run that is over (its worker was killed): adopt it, unless
  the backend is told to stop orphans, in which case it is stopped and a new job resumes from its checkpoints;
- started by another run that is still going: refuse, naming both.
`CheckpointLease` then makes it impossible for two jobs to train on one checkpoint prefix: an S3 object written
with a conditional put (`If-None-Match: *`) names the job holding the prefix; a lease whose job is no longer in
progress is stale and taken over (deleted only if unchanged, `If-Match`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from dagster import DagsterInstance, DagsterRunStatus, Failure

from rlhf_assets.artifact_files import hash_json

NAME_LIMIT = 63  # botocore's TrainingJobName: max 63, ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}
WORK_KEY_TAG = "rlhf-assets:work-key"
RUN_ID_TAG = "rlhf-assets:run-id"
ASSET_TAG = "rlhf-assets:asset"
ATTEMPT_TAG = "rlhf-assets:attempt"
ACTIVE = ("InProgress", "Stopping")
# Run states in which a run's worker may still be polling its job.
LIVE_RUNS = (DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
             DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING)
# SageMaker answers a second CreateTrainingJob with a name in use this way (botocore's model lists ResourceInUse).
NAME_IN_USE = ("ResourceInUse", "ResourceInUseException")
LEASE_TAKEN = ("PreconditionFailed", "ConditionalRequestConflict")


def work_key(asset: str, resume_key: dict[str, Any], code_version: str = "") -> str:
    """The identity of one piece of work: the asset and everything its result depends on, the step's code
    included (a job still running older code is not this work: its result would be filed under the new code)."""
    return hash_json({"asset": asset, "resume": resume_key, "code": code_version})[:16]


@dataclass(frozen=True)
class JobIdentity:
    """One attempt at one piece of work in one Dagster run."""

    asset: str
    work: str
    run_id: str
    attempt: int = 0

    @property
    def name(self) -> str:
        """`rlhf-<asset>-<work>-<run>-<attempt>`, the asset shortened to fit SageMaker's 63 characters: the
        work key keeps names of different assets apart however they are shortened."""
        suffix = f"-{self.work[:10]}-{self.run_id[:8]}-{self.attempt}"
        slug = re.sub(r"[^a-zA-Z0-9]+", "-", self.asset).strip("-")
        room = NAME_LIMIT - len("rlhf-") - len(suffix)
        return f"rlhf-{slug[:room].rstrip('-')}{suffix}"

    @property
    def name_filter(self) -> str:
        """What every job name of this work contains (`ListTrainingJobs(NameContains=...)`)."""
        return f"-{self.work[:10]}-"

    def tags(self) -> list[dict[str, str]]:
        return [{"Key": WORK_KEY_TAG, "Value": self.work}, {"Key": RUN_ID_TAG, "Value": self.run_id},
                {"Key": ASSET_TAG, "Value": self.asset[:256]}, {"Key": ATTEMPT_TAG, "Value": str(self.attempt)}]


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def job_tags(client: Any, arn: str) -> dict[str, str]:
    """A job's tags as a dict (SageMaker's `ListTags`, every page)."""
    tags: dict[str, str] = {}
    for page in client.get_paginator("list_tags").paginate(ResourceArn=arn):
        tags.update({tag["Key"]: tag["Value"] for tag in page.get("Tags", [])})
    return tags


def run_is_live(instance: DagsterInstance, run_id: str | None) -> bool:
    """Whether the run that started a job may still be watching it (unknown runs are treated as live: they may
    belong to another Dagster instance sharing the account)."""
    if not run_id:
        return True
    run = instance.get_run_by_id(run_id)
    return run is None or run.status in LIVE_RUNS


def running_job_for(client: Any, identity: JobIdentity, instance: DagsterInstance) -> dict[str, str] | None:
    """The in-progress job doing this work that this run may take over (its name and tags), or None.

    Raises `Failure` when another live run owns it: two runs of the same work at once must not both pay for it.
    """
    pages = client.get_paginator("list_training_jobs").paginate(NameContains=identity.name_filter)
    for page in pages:
        for summary in page.get("TrainingJobSummaries", []):
            if summary["TrainingJobStatus"] not in ACTIVE:
                continue
            tags = job_tags(client, summary["TrainingJobArn"])
            if tags.get(WORK_KEY_TAG) != identity.work:
                continue
            owner = tags.get(RUN_ID_TAG)
            if owner != identity.run_id and summary["TrainingJobStatus"] == "InProgress" and run_is_live(instance,
                                                                                                        owner):
                raise Failure(description=(
                    f"the same work ({identity.asset}, work key {identity.work}) is already running as SageMaker "
                    f"training job {summary['TrainingJobName']} for run {owner}, which is still live; wait for "
                    "that run, or cancel it (which stops its job) and re-execute"),
                    metadata={"training_job_name": summary["TrainingJobName"], "owner_run_id": str(owner)})
            return {"name": summary["TrainingJobName"], "status": summary["TrainingJobStatus"], **tags}
    return None


@dataclass(frozen=True)
class OrphanedJob:
    name: str
    run_id: str
    run_status: str
    ended_seconds_ago: float


def orphaned_jobs(client: Any, instance: DagsterInstance, grace_seconds: float) -> list[OrphanedJob]:
    """In-progress jobs of ours whose run, in this instance, ended more than `grace_seconds` ago: nobody watches
    them, and no re-execution has adopted them in that time. Jobs of runs this instance does not know (another
    deployment's) and of live runs are left alone."""
    found = []
    for page in client.get_paginator("list_training_jobs").paginate(NameContains="rlhf-", StatusEquals="InProgress"):
        for summary in page.get("TrainingJobSummaries", []):
            run_id = job_tags(client, summary["TrainingJobArn"]).get(RUN_ID_TAG)
            record = instance.get_run_record_by_id(run_id) if run_id else None
            if record is None or record.dagster_run.status in LIVE_RUNS or record.end_time is None:
                continue
            ago = time.time() - record.end_time
            if ago >= grace_seconds:
                found.append(OrphanedJob(summary["TrainingJobName"], str(run_id), record.dagster_run.status.value,
                                         ago))
    return found


def wait_until_ended(client: Any, name: str, *, poll: float, timeout: float) -> str:
    """Poll a job being stopped until it is no longer in progress; its final status."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.describe_training_job(TrainingJobName=name)["TrainingJobStatus"]
        if status not in ACTIVE:
            return status
        if time.monotonic() > deadline:
            raise Failure(description=f"training job {name} did not stop within {timeout:.0f}s; it still holds its "
                                      "checkpoint prefix: stop it by hand before re-executing")
        time.sleep(poll)


def job_status(client: Any, name: str) -> str | None:
    """A job's status, or None when no such job exists."""
    try:
        return str(client.describe_training_job(TrainingJobName=name)["TrainingJobStatus"])
    except ClientError as error:
        if error_code(error) in ("ValidationException", "ResourceNotFound"):
            return None
        raise


class CheckpointLease:
    """Exclusive use of one checkpoint prefix by one training job, as an S3 object written only if absent."""

    def __init__(self, s3: Any, bucket: str, key: str) -> None:
        self.s3, self.bucket, self.key = s3, bucket, key
        self.etag: str | None = None

    def acquire(self, job_name: str, run_id: str, sagemaker: Any, instance: DagsterInstance) -> None:
        """Hold the prefix for `job_name`; take over a lease whose job has ended; refuse one whose job runs, or
        whose job is not created yet by a run that is still live (it leases before it creates)."""
        for _ in range(2):
            try:
                response = self.s3.put_object(Bucket=self.bucket, Key=self.key, IfNoneMatch="*",
                                              Body=json.dumps({"job": job_name, "run_id": run_id}).encode())
                self.etag = response["ETag"]
                return
            except ClientError as error:
                if error_code(error) not in LEASE_TAKEN:
                    raise
            holder, etag = self._read()
            if holder is None:
                continue  # released between our put and our read
            if holder.get("job") == job_name:  # the job we are adopting holds it
                self.etag = etag
                return
            status = job_status(sagemaker, str(holder.get("job")))
            about_to_create = (status is None and holder.get("run_id") != run_id
                               and run_is_live(instance, holder.get("run_id")))
            if status in ACTIVE or about_to_create:
                raise Failure(description=(
                    f"checkpoint prefix s3://{self.bucket}/{self.key} is leased by training job {holder.get('job')} "
                    f"(run {holder.get('run_id')}), which is {status or 'being created'}: two jobs must not train "
                    "on one prefix"), metadata={"training_job_name": str(holder.get("job"))})
            self._delete(etag)  # stale: its job ended without releasing it (its worker was killed)
        raise Failure(description=f"could not lease s3://{self.bucket}/{self.key}: another run took it at once")

    def release(self) -> None:
        """Give the prefix up, only if the lease is still the one this holder wrote."""
        if self.etag is not None:
            self._delete(self.etag)
            self.etag = None

    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            got = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as error:
            if error_code(error) in ("NoSuchKey", "404"):
                return None, None
            raise
        return json.loads(got["Body"].read()), got["ETag"]

    def _delete(self, etag: str | None) -> None:
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key, **({"IfMatch": etag} if etag else {}))
        except ClientError as error:
            if error_code(error) not in (*LEASE_TAKEN, "NoSuchKey", "404"):
                raise
