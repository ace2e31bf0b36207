"""No SageMaker job is ever orphaned or doubled: idempotent creation, adoption after a killed worker, one job per
checkpoint prefix, checkpoints deleted once published.

SageMaker's job lifecycle is `tests/training_job_service.py` (moto has no `ResourceInUse`, no running job and no
stop); S3, where the lease, the Pipes messages and the checkpoints live, is the moto server.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from dagster import (
    AssetExecutionContext,
    DagsterInstance,
    DagsterRunStatus,
    MaterializeResult,
    asset,
    build_sensor_context,
    instance_for_test,
    materialize,
)
from dagster._core.pipes import utils as pipes_utils
from dagster._core.test_utils import create_run_for_test

from rlhf_assets.artifact_files import hash_json
from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.compute.base import StepLaunch, StepRun
from rlhf_assets.compute.local import LocalComputeBackend
from rlhf_assets.compute.sagemaker import SageMakerComputeBackend
from rlhf_assets.compute.sagemaker.backend import delete_prefix
from rlhf_assets.compute.sagemaker.jobs import RUN_ID_TAG, WORK_KEY_TAG, CheckpointLease, JobIdentity, work_key
from rlhf_assets.defs.models import automation
from rlhf_assets.defs.models.automation import orphaned_training_jobs
from rlhf_assets.presets import PROJECT_ROOT
from rlhf_assets.storage import ArtifactStore
from tests.moto_aws import BUCKET
from tests.training_job_service import DESCRIPTION, TrainingJobService

pytestmark = pytest.mark.aws

ROLE = "arn:aws:iam::123456789012:role/rlhf-sagemaker"
REQUEST = StepLaunch(step="sft", asset="sft_model", inputs={}, wire={"epochs": 1},
                      resume_key={"step": "sft", "config": {"epochs": 1}, "inputs": {}},
                      instance_type="ml.g5.2xlarge", hardware="training")
WORK = work_key(REQUEST.asset, REQUEST.resume_key)
CHECKPOINTS = f"rlhf-assets/sagemaker/checkpoints/sft_model/{hash_json(REQUEST.resume_key)[:16]}/"
LEASE = f"rlhf-assets/sagemaker/leases/sft_model/{hash_json(REQUEST.resume_key)[:16]}.json"


def _backend(**change: Any) -> SageMakerComputeBackend:
    return SageMakerComputeBackend(role_arn=ROLE, bucket=BUCKET, poll_interval_seconds=0.01,
                                   message_interval_seconds=0.05, **change)


def _step(backend: SageMakerComputeBackend, runs: list[StepRun]) -> Any:
    @asset(name="sft_model")
    def sft_model(context: AssetExecutionContext) -> MaterializeResult:
        run = backend.run_step(context, REQUEST, ArtifactStore(f"s3://{BUCKET}/rlhf"))
        runs.append(run)
        run.cleanup()  # as run_step_and_publish does once the output is published
        return MaterializeResult()

    return sft_model


def _materialize(instance: DagsterInstance, backend: SageMakerComputeBackend, runs: list[StepRun]) -> Any:
    return materialize([_step(backend, runs)], instance=instance, raise_on_error=False)


def _failure(result: Any) -> str:
    return str(next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").event_specific_data.error)


def _keys(prefix: str) -> list[str]:
    return [item["Key"] for item in boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
            .get("Contents", [])]


@pytest.fixture(autouse=True)
def _fresh_session(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test's double answers on a fresh default session (the hooks of the last one are gone). Every message
    of these jobs is on S3 when they end: no need for the Pipes reader's 10-second grace."""
    monkeypatch.setattr(pipes_utils, "WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 0)
    boto3.setup_default_session()
    delete_prefix(boto3.client("s3"), BUCKET, "rlhf-assets/")  # leases and checkpoints of the last test
    yield
    boto3.setup_default_session()


def test_a_create_whose_answer_was_lost_adopts_the_job_it_made(aws, tmp_path: Path) -> None:
    service = TrainingJobService(tmp_path / "jobs.json", lose_create_response=True).install()
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key=f"{CHECKPOINTS}step-00000002/model.safetensors", Body=b"synced by SageMaker")
    runs: list[StepRun] = []
    with instance_for_test() as instance:
        result = _materialize(instance, _backend(), runs)
        logs = "\n".join(str(entry.user_message) for entry in instance.all_logs(result.run_id))
    assert result.success, logs
    (name, job), = service.state()["jobs"].items()  # one job, though the create was answered "already exists"
    assert name == JobIdentity(REQUEST.asset, WORK, result.run_id, 0).name
    tags = {tag["Key"]: tag["Value"] for tag in job["params"]["Tags"]}
    assert tags[WORK_KEY_TAG] == WORK and tags[RUN_ID_TAG] == result.run_id
    assert "already exists (a create resent after a lost response): adopting it" in logs
    assert "step ran in the job" in logs and runs[0].description.content_hash == DESCRIPTION["content_hash"]
    assert _keys(LEASE) == [], "the lease is released once the job has ended"
    assert "deleted 1 checkpoint objects under" in logs
    assert _keys(CHECKPOINTS) == [], "the checkpoint prefix is deleted after a successful publish"


def test_keep_checkpoints_keeps_the_prefix(aws, tmp_path: Path) -> None:
    TrainingJobService(tmp_path / "jobs.json").install()
    boto3.client("s3").put_object(Bucket=BUCKET, Key=f"{CHECKPOINTS}step-00000004/x", Body=b"1")
    runs: list[StepRun] = []
    with instance_for_test() as instance:
        assert _materialize(instance, _backend(keep_checkpoints=True), runs).success
    assert _keys(CHECKPOINTS) != []


def killed_worker(state_file: str) -> None:
    """Run 1, in its own process: creates the job and is SIGKILLed while polling it (the double kills it)."""
    TrainingJobService(Path(state_file), kill_on_poll=2).install()
    with DagsterInstance.get() as instance:
        _materialize(instance, _backend(), [])


@pytest.mark.parametrize("orphans", ["adopt", "stop"])
def test_a_job_whose_worker_was_killed_is_adopted_or_stopped_by_the_re_execution(aws, tmp_path: Path,
                                                                                 orphans: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    state = tmp_path / "jobs.json"
    env = {**os.environ, **aws, "DAGSTER_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    killed = subprocess.run([sys.executable, "-c", "from tests.aws.test_sagemaker_jobs import killed_worker; "
                             f"killed_worker({str(state)!r})"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    service = TrainingJobService(state)
    (orphan, job), = service.state()["jobs"].items()
    assert job["status"] == "InProgress", "the killed worker could not stop its job"
    assert _keys(LEASE) == [LEASE], "and could not release its lease"
    with DagsterInstance.from_config(str(home)) as instance:
        (first,) = instance.get_runs()
        assert first.status == DagsterRunStatus.STARTED
        instance.report_run_failed(first)  # what run monitoring records for a run whose worker is gone
        service.install()
        runs: list[StepRun] = []
        result = _materialize(instance, _backend(orphans=orphans), runs)
        logs = "\n".join(str(entry.user_message) for entry in instance.all_logs(result.run_id))
    assert result.success, logs
    jobs = service.state()["jobs"]
    if orphans == "adopt":  # waited for the running job: no second job, its messages read from the first
        assert list(jobs) == [orphan] and len(service.calls("CreateTrainingJob")) == 1
        assert f"adopting SageMaker training job {orphan}" in logs and "step ran in the job" in logs
    else:  # stopped it, then a new job resumed from the same checkpoint prefix, taking over the stale lease
        assert service.calls("StopTrainingJob") == [{"TrainingJobName": orphan}]
        assert f"training job {orphan} of run {first.run_id} is InProgress: stopping it" in logs
        assert jobs[orphan]["status"] == "Stopped" and len(jobs) == 2
        new = next(name for name in jobs if name != orphan)
        assert (jobs[new]["params"]["CheckpointConfig"]["S3Uri"]
                == jobs[orphan]["params"]["CheckpointConfig"]["S3Uri"])
    assert runs[0].description.content_hash == DESCRIPTION["content_hash"]
    assert _keys(LEASE) == []


def test_two_runs_of_the_same_work_at_once_start_one_job(aws, tmp_path: Path) -> None:
    service = TrainingJobService(tmp_path / "jobs.json").install()
    with instance_for_test() as instance:
        other = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
        other_job = JobIdentity(REQUEST.asset, WORK, other.run_id, 0)
        service.add_job(other_job.name, {WORK_KEY_TAG: WORK, RUN_ID_TAG: other.run_id})
        result = _materialize(instance, _backend(), [])
    assert not result.success and service.calls("CreateTrainingJob") == []
    message = _failure(result)
    assert f"already running as SageMaker training job {other_job.name} for run {other.run_id}" in message


def test_the_lease_stops_a_second_job_when_the_listing_lags(aws, tmp_path: Path) -> None:
    """Both runs looked before either had created its job (ListTrainingJobs is eventually consistent): the
    conditional put of the lease lets only the first one create."""
    service = TrainingJobService(tmp_path / "jobs.json", listing_lags=True).install()
    with instance_for_test() as instance:
        other = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
        other_job = JobIdentity(REQUEST.asset, WORK, other.run_id, 0)
        service.add_job(other_job.name, {WORK_KEY_TAG: WORK, RUN_ID_TAG: other.run_id})
        CheckpointLease(boto3.client("s3"), BUCKET, LEASE).acquire(other_job.name, other.run_id,
                                                                   boto3.client("sagemaker"), instance)
        result = _materialize(instance, _backend(), [])
    assert not result.success and service.calls("CreateTrainingJob") == []
    assert f"is leased by training job {other_job.name} (run {other.run_id}), which is InProgress" in _failure(result)


def test_a_lease_taken_by_a_live_run_that_has_not_created_its_job_yet_is_respected(aws, tmp_path: Path) -> None:
    """The other run leased the prefix and is about to call CreateTrainingJob: its job does not exist yet, but
    the lease is not stale while that run is live."""
    service = TrainingJobService(tmp_path / "jobs.json").install()
    with instance_for_test() as instance:
        other = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
        other_job = JobIdentity(REQUEST.asset, WORK, other.run_id, 0)
        CheckpointLease(boto3.client("s3"), BUCKET, LEASE).acquire(other_job.name, other.run_id,
                                                                   boto3.client("sagemaker"), instance)
        refused = _materialize(instance, _backend(), [])
        instance.report_run_failed(other)  # it died before creating its job: the lease is stale now
        taken_over = _materialize(instance, _backend(), [])
    assert not refused.success and "which is being created" in _failure(refused)
    assert taken_over.success and len(service.calls("CreateTrainingJob")) == 1
    assert _keys(LEASE) == []


def test_the_sweep_stops_jobs_whose_run_ended_once_nobody_adopted_them(aws, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's `orphaned_training_jobs` sensor: a job of a failed run is stopped once the grace has passed;
    a live run's job, another deployment's, and any job within the grace are left alone."""
    service = TrainingJobService(tmp_path / "jobs.json").install()
    compute = ComputeBackend(local=LocalComputeBackend(scratch_dir=str(tmp_path)), sagemaker=_backend())
    with instance_for_test() as instance:
        dead = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
        instance.report_run_failed(dead)
        live = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
        for name, run_id in (("rlhf-sft-model-0a-dead", dead.run_id), ("rlhf-sft-model-0b-live", live.run_id),
                             ("rlhf-sft-model-0c-elsewhere", "a-run-of-another-instance")):
            service.add_job(name, {WORK_KEY_TAG: WORK, RUN_ID_TAG: run_id})

        def sweep(backend: ComputeBackend) -> Any:
            with build_sensor_context(instance=instance, resources={"compute": backend}) as context:
                return orphaned_training_jobs(context)

        within_grace = sweep(compute)
        assert service.calls("StopTrainingJob") == [] and "no orphaned training job" in str(within_grace)
        monkeypatch.setattr(automation, "ORPHAN_GRACE_SECONDS", 0)  # the half hour has passed
        swept = sweep(compute)
        unconfigured = sweep(ComputeBackend(local=LocalComputeBackend(scratch_dir=str(tmp_path)),
                                            sagemaker=SageMakerComputeBackend(role_arn="", bucket="")))
    assert service.calls("StopTrainingJob") == [{"TrainingJobName": "rlhf-sft-model-0a-dead"}]
    assert "stopped 1 orphaned training job(s): rlhf-sft-model-0a-dead" in str(swept.skip_reason)
    assert "not configured" in str(unconfigured)
