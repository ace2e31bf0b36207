"""SageMaker: the Pipes client and backend against a real local moto server (AWS is out of reach).

moto 5 records training jobs but runs no container, reports them `Completed` at once and implements neither
`stop_training_job` nor a failed job; `tests/sagemaker_platform.py` plays the SageMaker service around the real
`sagemaker-training` toolkit (which runs our tarball as the image does), and botocore's
`Stubber` stands in for the job states moto cannot produce (failure, a long-running job being stopped).
"""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from dagster import (
    AssetExecutionContext,
    AssetKey,
    DagsterExecutionInterruptedError,
    DagsterInstance,
    Failure,
    MaterializeResult,
    asset,
    instance_for_test,
    materialize,
)
from dagster._core.pipes import utils as pipes_utils
from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader

from rlhf_assets.compute.base import StepLaunch
from rlhf_assets.compute.launch import step_command
from rlhf_assets.compute.sagemaker import PipesSageMakerClient, SageMakerComputeBackend
from rlhf_assets.compute.sagemaker.account import AccountSettings
from rlhf_assets.compute.sagemaker.backend import validate_request
from rlhf_assets.compute.sagemaker.jobs import RUN_ID_TAG, WORK_KEY_TAG
from rlhf_assets.compute.sagemaker.pipes import RankedS3MessageReader
from rlhf_assets.compute.sagemaker.pricing import estimate_cost
from rlhf_assets.presets import PROJECT_ROOT
from rlhf_assets.resources import (
    recorded_manifest,
)
from rlhf_assets.storage import ArtifactStore, Manifest
from tests.conftest import publish_project
from tests.leaks import files_containing, s3_objects_containing
from tests.moto_aws import BUCKET, SECRET

pytestmark = pytest.mark.aws

ROLE = "arn:aws:iam::123456789012:role/rlhf-sagemaker"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _run_client(client: PipesSageMakerClient, params: dict[str, Any]) -> Any:
    @asset
    def job(context: AssetExecutionContext) -> MaterializeResult:
        return client.run(context=context, create_training_job_params=params).get_materialize_result()

    with instance_for_test() as instance:
        return materialize([job], instance=instance, raise_on_error=False)


def _stubbed_client(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[PipesSageMakerClient, Stubber, Any]:
    """A Pipes client whose SageMaker calls are answered by a Stubber. No step runs in these jobs, so no Pipes
    message ever comes: Dagster's reader would wait its 10-second grace for late messages after every job; these
    tests are about job states, so the grace is set to zero here."""
    monkeypatch.setattr(pipes_utils, "WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 0)
    sagemaker = boto3.client("sagemaker")
    s3 = boto3.client("s3")
    client = PipesSageMakerClient(
        context_injector=PipesS3ContextInjector(bucket=BUCKET, client=s3),
        message_reader=PipesS3MessageReader(bucket=BUCKET, client=s3, interval=0.2),
        client=sagemaker, poll_interval=0.01,
    )
    return client, Stubber(sagemaker), sagemaker


def _manifest(asset: str, uri: str) -> Manifest:
    return Manifest(asset=asset, uri=uri, content_hash="0" * 64, preset="gptj_6b")


REQUEST = StepLaunch(step="sft", asset="sft_model",
                      inputs={"preference_dataset": _manifest("preference_dataset", "preference_dataset/a")},
                      wire={}, resume_key={}, num_processes=8, instance_type="ml.p4d.24xlarge",
                      accelerate_config="rlhf_assets/compute/accelerate/zero2_bf16.yaml")
PARAMS = SageMakerComputeBackend(role_arn=ROLE, bucket=BUCKET).training_job_params(
    job_name="rlhf-sft-test", request=REQUEST,
    input_uris={"preference_dataset": f"s3://{BUCKET}/rlhf/preference_dataset/a"},
    code_uri=f"s3://{BUCKET}/code/sourcedir.tar.gz",
    checkpoint_uri=f"s3://{BUCKET}/checkpoints/sft", region="us-east-1")


def _description(status: str, **extra: Any) -> dict[str, Any]:
    return {"TrainingJobName": "rlhf-sft-test",
            "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/rlhf-sft-test",
            "TrainingJobStatus": status, "SecondaryStatus": "Training",
            "AlgorithmSpecification": {"TrainingInputMode": "File"}, "ModelArtifacts": {"S3ModelArtifacts": "s3://x/y"},
            "ResourceConfig": PARAMS["ResourceConfig"], "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "CreationTime": datetime(2026, 11, 26, tzinfo=UTC), **extra}


def test_a_failed_job_surfaces_its_failure_reason(aws, monkeypatch: pytest.MonkeyPatch) -> None:
    client, stubber, _ = _stubbed_client(aws, monkeypatch)
    stubber.add_response("create_training_job", {"TrainingJobArn": _description("x")["TrainingJobArn"]})
    stubber.add_response("describe_training_job", _description("InProgress"), {"TrainingJobName": "rlhf-sft-test"})
    stubber.add_response("describe_training_job", _description(
        "Failed", FailureReason="AlgorithmError: CUDA out of memory"), {"TrainingJobName": "rlhf-sft-test"})
    with stubber:
        result = _run_client(client, dict(PARAMS))
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "rlhf-sft-test failed: AlgorithmError: CUDA out of memory" in str(failure.event_specific_data.error)
    stubber.assert_no_pending_responses()


def test_a_cancelled_run_stops_the_training_job(aws, monkeypatch: pytest.MonkeyPatch) -> None:
    client, stubber, sagemaker = _stubbed_client(aws, monkeypatch)
    stubber.add_response("create_training_job", {"TrainingJobArn": _description("x")["TrainingJobArn"]})
    stubber.add_response("describe_training_job", _description("InProgress"), {"TrainingJobName": "rlhf-sft-test"})
    stubber.add_response("stop_training_job", {}, {"TrainingJobName": "rlhf-sft-test"})
    polls = []

    def interrupt_on_second_poll(**_: Any) -> None:
        """What Dagster raises in the step when the run is terminated from the UI."""
        polls.append(1)
        if len(polls) == 2:
            raise DagsterExecutionInterruptedError()

    sagemaker.meta.events.register("provide-client-params.sagemaker.DescribeTrainingJob", interrupt_on_second_poll)
    with stubber:
        result = _run_client(client, dict(PARAMS))
    assert not result.success
    stubber.assert_no_pending_responses()  # stop_training_job was called with the job's name


def test_cost_estimate_from_billable_time_and_the_price_table() -> None:
    cost = estimate_cost(_description("Completed", TrainingTimeInSeconds=3600, BillableTimeInSeconds=1200),
                         {"ml.p4d.24xlarge": 37.688})
    assert cost["estimated_cost_usd"] == pytest.approx(1200 / 3600 * 37.688)
    assert cost["spot_savings"] == pytest.approx(2 / 3) and cost["billable_seconds"] == 1200
    assert estimate_cost(_description("Completed", TrainingTimeInSeconds=60), {})["estimated_cost_usd"] is None


def test_completed_job_metadata_carries_the_cost(aws, monkeypatch: pytest.MonkeyPatch) -> None:
    client, stubber, _ = _stubbed_client(aws, monkeypatch)
    stubber.add_response("create_training_job", {"TrainingJobArn": _description("x")["TrainingJobArn"]})
    stubber.add_response("describe_training_job", _description(
        "Completed", TrainingTimeInSeconds=7200, BillableTimeInSeconds=2400), {"TrainingJobName": "rlhf-sft-test"})
    with stubber:
        result = _run_client(client, dict(PARAMS))
    assert result.success
    metadata = result.asset_materializations_for_node("job")[0].metadata
    assert metadata["estimated_cost_usd"].value == pytest.approx(2400 / 3600 * 37.688)
    assert metadata["billable_seconds"].value == 2400 and metadata["instance_count"].value == 1
    assert "#/jobs/rlhf-sft-test" in metadata["console_url"].value


@pytest.mark.parametrize("ended", [
    _description("Failed", FailureReason="CapacityError: Unable to provision requested ML compute capacity."),
    {**_description("Stopped"), "SecondaryStatus": "MaxWaitTimeExceeded"},  # spot waited out MaxWaitTimeInSeconds
], ids=["capacity-error", "spot-max-wait"])
def test_no_capacity_retries_the_step_which_then_completes(aws, ended: dict[str, Any],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    client, stubber, _ = _stubbed_client(aws, monkeypatch)
    client.capacity_retry_seconds = 0
    arn = {"TrainingJobArn": _description("x")["TrainingJobArn"]}
    stubber.add_response("create_training_job", arn)
    stubber.add_response("describe_training_job", ended, {"TrainingJobName": "rlhf-sft-test"})
    stubber.add_response("create_training_job", arn)
    stubber.add_response("describe_training_job", _description("Completed", TrainingTimeInSeconds=60),
                         {"TrainingJobName": "rlhf-sft-test"})
    with stubber:
        result = _run_client(client, dict(PARAMS))
    assert result.success
    assert any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    stubber.assert_no_pending_responses()


def test_multi_instance_jobs_launch_accelerate_across_the_hosts() -> None:
    env = {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2"}
    command = step_command("ppo", 7, "rlhf_assets/compute/accelerate/zero2_bf16.yaml", env)
    joined = " ".join(command)
    assert "--num_processes 14" in joined and "--num_machines 2" in joined and "--machine_rank 1" in joined
    assert "--main_process_ip algo-1" in joined and command[-2:] == ["-m", "rlhf_assets.steps.ppo"]
    assert step_command("sft", 1, None, {})[1:] == ["-m", "rlhf_assets.steps.sft"]


def test_cli_materializes_sft_as_a_sagemaker_job_with_logs_metadata_and_cost(aws, tmp_path: Path,
                                                                             upstream: Path) -> None:
    """`dagster asset materialize` as a user runs it; the fake container is loaded into that process. The
    upstream chain is the session's, published into this project's S3 root."""
    env = {**os.environ, **aws, "DAGSTER_HOME": str(tmp_path / "home"), "RLHF_SCRATCH_DIR": str(tmp_path / "scratch"),
           "RLHF_ARTIFACT_ROOT": f"s3://{BUCKET}/cli", "RLHF_SAGEMAKER_ROLE_ARN": ROLE,
           "RLHF_SAGEMAKER_BUCKET": BUCKET, "RLHF_SAGEMAKER_INSTANCE_TYPE": "ml.g5.2xlarge",
           "FAKE_SAGEMAKER_SCRATCH": str(tmp_path / "container"),
           "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "tests" / "fake_sagemaker_site"), str(PROJECT_ROOT)])}
    publish_project(upstream, f"s3://{BUCKET}/cli", tmp_path / "home")
    base = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "rlhf_assets.definitions"]
    config = json.dumps({"ops": {"sft_model": {"config": {"max_train_rows": 32}}}})
    done = subprocess.run([*base, "--select", "sft_model", "--config-json", config], cwd=PROJECT_ROOT,
                          env={**env, "RLHF_COMPUTE_BACKEND": "sagemaker"}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SageMaker training job rlhf-sft-model-" in done.stderr and "SFT on 32 demonstrations" in done.stderr
    assert "[sagemaker rlhf-sft-model-" in done.stderr, "CloudWatch lines of the job are forwarded"
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        event = instance.get_latest_materialization_event(AssetKey("sft_model")).asset_materialization
        preference = recorded_manifest(instance, AssetKey("preference_dataset"), f"s3://{BUCKET}/cli/manifests")
    (request,) = [json.loads(path.read_text()) for path in (tmp_path / "container" / "requests").glob("*.json")]
    assert request["RoleArn"] == ROLE and request["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"
    assert request["EnableManagedSpotTraining"] is True
    assert request["OutputDataConfig"]["CompressionType"] == "NONE"
    assert request["AlgorithmSpecification"]["TrainingImage"] == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch:2.13.0-cu133-amzn2023-sagemaker")
    assert request["StoppingCondition"]["MaxWaitTimeInSeconds"] >= request["StoppingCondition"]["MaxRuntimeInSeconds"]
    assert request["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert request["CheckpointConfig"]["S3Uri"].startswith(f"s3://{BUCKET}/rlhf-assets/sagemaker/checkpoints/sft_model/")
    assert {c["ChannelName"] for c in request["InputDataConfig"]} == {"base_model", "preference_dataset"}
    assert all(c["DataSource"]["S3DataSource"]["S3Uri"].startswith(f"s3://{BUCKET}/cli/")
               for c in request["InputDataConfig"])
    assert json.loads(request["HyperParameters"]["sagemaker_program"]) == "rlhf_entry.py"
    environment = request["Environment"]
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"} <= set(environment)
    assert environment["RLHF_PIPES_TRANSPORT"] == "s3" and environment["RLHF_STEP"] == "sft"
    # Each downloaded channel is re-hashed in the job against the content hash its lineage records.
    assert environment["RLHF_INPUT_HASH_PREFERENCE_DATASET"] == preference.content_hash
    # The step's metrics came back through the S3 message channel, with the job's identity and cost.
    assert event.metadata["eval_perplexity"].value > 1
    assert event.metadata["training_job_arn"].value.startswith("arn:aws:sagemaker:us-east-1:")
    assert event.metadata["estimated_cost_usd"].value >= 0 and event.metadata["instance_type"].value == "ml.g5.2xlarge"
    assert event.metadata["artifact_uri"].value.startswith(f"s3://{BUCKET}/cli/sft_model/")
    # No credentials in the job, its environment, the output or the metadata...
    shown = json.dumps(request) + done.stderr + done.stdout + json.dumps({k: str(v.value)
                                                                          for k, v in event.metadata.items()})
    assert SECRET not in shown and "AKIATESTKEY" not in shown
    # ...nor in the instance (event log, run storage, compute logs), the local scratch or anything in the bucket.
    for secret in (SECRET, "AKIATESTKEY"):
        assert files_containing(secret, tmp_path / "home", tmp_path / "scratch", tmp_path / "container") == []
        assert s3_objects_containing(secret, BUCKET) == []


def test_a_throttled_poll_backs_off_and_the_job_still_completes(aws, monkeypatch: pytest.MonkeyPatch) -> None:
    client, stubber, _ = _stubbed_client(aws, monkeypatch)
    client.max_poll_backoff = 0.05
    stubber.add_response("create_training_job", {"TrainingJobArn": _description("x")["TrainingJobArn"]})
    stubber.add_client_error("describe_training_job", "ThrottlingException", "Rate exceeded")
    stubber.add_response("describe_training_job", _description("Completed", TrainingTimeInSeconds=60),
                         {"TrainingJobName": "rlhf-sft-test"})
    with stubber:
        result = _run_client(client, dict(PARAMS))
    assert result.success
    stubber.assert_no_pending_responses()


def test_an_expired_credential_while_waiting_stops_the_job_before_failing(aws, monkeypatch: pytest.MonkeyPatch) -> None:
    client, stubber, _ = _stubbed_client(aws, monkeypatch)
    stubber.add_response("create_training_job", {"TrainingJobArn": _description("x")["TrainingJobArn"]})
    stubber.add_response("describe_training_job", _description("InProgress"), {"TrainingJobName": "rlhf-sft-test"})
    stubber.add_client_error("describe_training_job", "ExpiredTokenException", "The security token has expired")
    stubber.add_response("stop_training_job", {}, {"TrainingJobName": "rlhf-sft-test"})
    with stubber:
        result = _run_client(client, dict(PARAMS))
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "ExpiredTokenException" in str(failure.event_specific_data.error)
    stubber.assert_no_pending_responses()  # stop_training_job was called before the error propagated


def test_a_create_answered_already_exists_adopts_the_job_when_its_tags_are_ours(aws, monkeypatch) -> None:
    """botocore resent a create whose answer was lost: the resend gets ResourceInUse, the job the first call
    made is described, its tags name this run and work, and it is waited for, not created again; a job of that
    name with someone else's tags is refused."""
    ours = [{"Key": WORK_KEY_TAG, "Value": "w" * 16}, {"Key": RUN_ID_TAG, "Value": "run-1"}]
    arn = _description("x")["TrainingJobArn"]
    for tags, succeeds in ((ours, True), ([{"Key": RUN_ID_TAG, "Value": "someone-else"}], False)):
        client, stubber, _ = _stubbed_client(aws, monkeypatch)
        stubber.add_client_error("create_training_job", "ResourceInUse", "Training job names must be unique within "
                                 "an AWS account and region, and a training job with this name already exists")
        stubber.add_response("describe_training_job", _description("InProgress"), {"TrainingJobName": "rlhf-sft-test"})
        stubber.add_response("list_tags", {"Tags": tags}, {"ResourceArn": arn})
        if succeeds:
            stubber.add_response("describe_training_job", _description("Completed", TrainingTimeInSeconds=60),
                                 {"TrainingJobName": "rlhf-sft-test"})
        with stubber:
            result = _run_client(client, {**PARAMS, "Tags": ours})
        assert result.success is succeeds
        if not succeeds:
            assert "refusing to watch a stranger's job" in str(next(
                e for e in result.all_events if e.event_type_value == "STEP_FAILURE").event_specific_data.error)
        stubber.assert_no_pending_responses()


def test_a_quota_refusal_names_the_quota_and_instance_type(aws, monkeypatch: pytest.MonkeyPatch) -> None:
    client, stubber, _ = _stubbed_client(aws, monkeypatch)
    stubber.add_client_error("create_training_job", "ResourceLimitExceeded",
                             "The account-level service limit 'ml.p4d.24xlarge for spot training job usage' is 0")
    with stubber:
        result = _run_client(client, dict(PARAMS))
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert "Raise the Service Quotas value 'ml.p4d.24xlarge for spot training job usage'" in message


@pytest.mark.parametrize(("change", "expected"), [
    ({"region": "xx-nowhere-1"}, "not published in region 'xx-nowhere-1'"),
    ({"role_arn": ""}, "needs a role and a bucket"),
    ({"role_arn": "not-an-arn"}, "execution role ARN 'not-an-arn' does not match"),
    ({"bucket": "no-such-bucket"}, "s3://no-such-bucket is not usable"),
    ({"instance_type": "ml.p4d.24xlarge", "settings": AccountSettings(volume_kms_key_id=KEY)},
     "volume_kms_key_id cannot be used with ml.p4d.24xlarge: its storage is local NVMe"),
    ({"settings": AccountSettings(subnets=["subnet-0abc"])}, "a VPC needs both subnets and security_group_ids"),
    ({"settings": AccountSettings(subnets=["subnet_0abc"], security_group_ids=["sg-1"])},
     "'subnet_0abc' is not a subnet or security group ID"),
    ({"settings": AccountSettings(tags={"aws:owner": "x"})}, "and dagster prefixes are reserved"),
    ({"settings": AccountSettings(tags={"rlhf-assets:run-id": "forged"})}, "prefixes are reserved"),
    ({"settings": AccountSettings(max_pending_seconds=60)}, "SageMaker takes 1800 to 2419200"),
    ({"settings": AccountSettings(network_isolation=True)}, "network_isolation cuts the container off"),
])
def test_bad_settings_fail_before_any_job_is_created(aws, tmp_path: Path, change: dict, expected: str) -> None:
    backend = SageMakerComputeBackend(**{"role_arn": ROLE, "bucket": BUCKET, **change})
    request = StepLaunch(step="sft", asset="sft_model", wire={}, resume_key={},
                          inputs={"preference_dataset": _manifest("preference_dataset", "p/a")})
    created = []
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("before-call.sagemaker.CreateTrainingJob", lambda **kw: created.append(1))

    @asset(name="sft_model")
    def step(context: AssetExecutionContext) -> MaterializeResult:
        backend.run_step(context, request, ArtifactStore(f"s3://{BUCKET}/rlhf"))
        return MaterializeResult()

    with instance_for_test() as instance:
        result = materialize([step], instance=instance, raise_on_error=False)
    boto3.setup_default_session()
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert expected in str(failure.event_specific_data.error) and created == []


def test_account_settings_reach_the_job_request_and_sagemaker_accepts_them(aws) -> None:
    settings = AccountSettings(subnets=["subnet-0a1b", "subnet-0c2d"], security_group_ids=["sg-0e3f"],
                               encrypt_inter_container_traffic=True, output_kms_key_id=KEY, volume_kms_key_id=KEY,
                               tags={"cost-centre": "ml-research", "owner": "rlhf team"}, max_pending_seconds=7200)
    backend = SageMakerComputeBackend(role_arn=ROLE, bucket=BUCKET, settings=settings)
    assert backend.settings.problem("ml.p3.16xlarge", install_requirements=True) is None
    params = backend.training_job_params(job_name="rlhf-sft-settings", request=REQUEST, input_uris={
        "preference_dataset": f"s3://{BUCKET}/rlhf/preference_dataset/a"}, code_uri=f"s3://{BUCKET}/c.tar.gz",
        checkpoint_uri=f"s3://{BUCKET}/checkpoints/sft", region="us-east-1", tags=[{"Key": "run", "Value": "r1"}])
    sagemaker = boto3.client("sagemaker")
    validate_request(params, sagemaker.meta.service_model)
    sagemaker.create_training_job(**{**params, "ResourceConfig": {**params["ResourceConfig"],
                                                                  "InstanceType": "ml.p3.16xlarge"}})
    job = sagemaker.describe_training_job(TrainingJobName="rlhf-sft-settings")
    assert job["VpcConfig"] == {"Subnets": ["subnet-0a1b", "subnet-0c2d"], "SecurityGroupIds": ["sg-0e3f"]}
    assert job["EnableInterContainerTrafficEncryption"] is True and job["OutputDataConfig"]["KmsKeyId"] == KEY
    assert job["ResourceConfig"]["VolumeKmsKeyId"] == KEY
    assert job["StoppingCondition"]["MaxPendingTimeInSeconds"] == 7200
    tags = {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]}
    assert tags == {"cost-centre": "ml-research", "owner": "rlhf team", "run": "r1"}


def test_a_channel_name_sagemaker_would_reject_is_refused_by_the_model_check() -> None:
    params = {**PARAMS, "InputDataConfig": [{**PARAMS["InputDataConfig"][0], "ChannelName": "bad channel!"}]}
    with pytest.raises(Failure, match="input channel name 'bad channel!' does not match"):
        validate_request(params, boto3.client("sagemaker", region_name="us-east-1").meta.service_model)
    with pytest.raises(Failure, match="is 70 characters; SageMaker allows 63"):
        validate_request({**PARAMS, "TrainingJobName": "x" * 70},
                         boto3.client("sagemaker", region_name="us-east-1").meta.service_model)


def test_the_message_reader_merges_ranks_and_a_spot_restarts_attempts(aws) -> None:
    """Rank 0 wrote 3 chunks, was interrupted (no `closed`) and restarted, writing from chunk 1 again under a
    new attempt segment; rank 1 had closed in the first start and closes again in the second. Everything is read
    once, and each rank's `closed` counts once, so the session ends only when rank 0's restart has closed."""
    s3 = boto3.client("s3")
    reader = RankedS3MessageReader(bucket=BUCKET, client=s3, key_prefix="rlhf-assets/sagemaker/pipes/messages",
                                   world_size=2)

    def message(method: str, **params: Any) -> str:
        return json.dumps({"__dagster_pipes_version": "0.1", "method": method, "params": params})

    def chunk(rank: int, attempt: str, index: int, *lines: str) -> None:
        s3.put_object(Bucket=BUCKET, Body="\n".join(lines).encode(),
                      Key=f"{params['key_prefix']}/rank-{rank}/{attempt}/{index}.json")

    with reader.get_params() as params:
        assert not reader.messages_are_readable(params)
        for index in (1, 2, 3):
            chunk(0, "attempt-1", index, message("log", message=f"first start {index}"))
        chunk(1, "attempt-1", 1, message("log", message="rank 1 first start"), message("closed"))
        assert reader.messages_are_readable(params)
        first = reader.download_messages(None, params)[1].split("\n")
        chunk(0, "attempt-2", 1, message("log", message="second start 1"))
        chunk(1, "attempt-2", 1, message("log", message="rank 1 second start"), message("closed"))
        chunk(0, "attempt-2", 2, message("report_custom_message", payload={"rlhf_output": {}}), message("closed"))
        second = reader.download_messages(1, params)[1].split("\n")
        assert reader.download_messages(2, params) is None, "nothing is read twice"
    methods = [json.loads(line)["method"] for line in first + second]
    logs = [json.loads(line)["params"]["message"] for line in first + second if json.loads(line)["method"] == "log"]
    assert logs == ["first start 1", "first start 2", "first start 3", "rank 1 first start", "second start 1",
                    "rank 1 second start"]
    assert methods.count("closed") == 2 and "report_custom_message" in methods  # rank 1's second close dropped
    in_second = [json.loads(line)["method"] for line in second]
    assert in_second.count("closed") == 1 and in_second.index("closed") > in_second.index("report_custom_message")
