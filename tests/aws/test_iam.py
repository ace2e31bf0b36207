"""The IAM policy files are exactly what a SageMaker materialization in an enterprise account needs.

The account: separate input (artifacts) and SageMaker buckets, each encrypted with its own KMS key; jobs in a VPC,
network-isolated, with an output key, a volume key, tags and a pending-time limit. The Dagster process signs as one
principal, the SageMaker platform (channel downloads, checkpoint sync, model upload, logs) as the job role, and
the isolated container has no credentials at all. A moto server records every request (`tests/moto_aws.py`), and
each is checked against the principal's policy file, filled in and otherwise as written (`tests/iam_check.py`): the
action, the resource ARN, the KMS actions S3 performs for the caller, `iam:PassRole`, and the conditions.
"""

import json
from pathlib import Path
from string import Template
from typing import Any

import boto3
import pytest
import s3fs
from dagster import AssetKey, materialize

from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.compute.local import LocalComputeBackend
from rlhf_assets.compute.sagemaker import SageMakerComputeBackend
from rlhf_assets.compute.sagemaker.account import AccountSettings
from rlhf_assets.presets import PROJECT_ROOT
from rlhf_assets.resources import ArtifactStoreResource, LabelingResource, ManifestIOManager, PresetResource
from tests.conftest import all_assets, project_instance, publish_project
from tests.iam_check import Permission, allowed, for_the_job_role, read_recording, required
from tests.moto_aws import BUCKET, recording_aws, reset_recording
from tests.sagemaker_platform import SageMakerPlatform

pytestmark = pytest.mark.aws

ARTIFACTS_BUCKET = "rlhf-artifacts"
ROLE = "arn:aws:iam::123456789012:role/rlhf-sagemaker"
DAGSTER, JOB = "AKIADAGSTERPROCESS00", "AKIASAGEMAKERJOBROLE"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/rlhf-assets-train:latest"  # the derived image: no installs


def policy(name: str, keys: list[str]) -> dict[str, Any]:
    """A policy file filled in for this account, and nothing else changed."""
    values = {"BUCKET": BUCKET, "PREFIX": "rlhf-assets/sagemaker", "ARTIFACTS": f"{ARTIFACTS_BUCKET}/rlhf",
              "ARTIFACTS_BUCKET": ARTIFACTS_BUCKET, "ACCOUNT": "123456789012", "REGION": "us-east-1",
              "ROLE_NAME": "rlhf-sagemaker", "KMS_KEYS": ", ".join(json.dumps(key) for key in keys)}
    return json.loads(Template((PROJECT_ROOT / "deploy" / "iam" / name).read_text()).substitute(values))


def _encrypted_buckets() -> dict[str, str]:
    kms, s3 = boto3.client("kms"), boto3.client("s3")
    s3.create_bucket(Bucket=ARTIFACTS_BUCKET)
    keys = {}
    for bucket in (BUCKET, ARTIFACTS_BUCKET):
        keys[bucket] = kms.create_key(Description=f"default key of {bucket}")["KeyMetadata"]["Arn"]
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": keys[bucket]}}]})
    return keys


def test_every_call_of_an_enterprise_sagemaker_materialization_is_allowed_by_the_policy_files(
        tmp_path: Path, upstream: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recording = tmp_path / "recording.jsonl"
    with recording_aws(recording) as aws:
        bucket_keys = _encrypted_buckets()
        kms = boto3.client("kms")
        output_key, volume_key = (kms.create_key(Description=what)["KeyMetadata"]["Arn"] for what in ("output",
                                                                                                     "volume"))
        publish_project(upstream, f"s3://{ARTIFACTS_BUCKET}/rlhf", tmp_path / "project" / "dagster_home")
        settings = AccountSettings(subnets=["subnet-0a1b2c3d"], security_group_ids=["sg-0e4f5a6b"],
                                   network_isolation=True, encrypt_inter_container_traffic=True,
                                   output_kms_key_id=output_key, volume_kms_key_id=volume_key,
                                   tags={"cost-centre": "ml-research"}, max_pending_seconds=7200)
        sagemaker = SageMakerComputeBackend(role_arn=ROLE, bucket=BUCKET, instance_type="ml.p3.2xlarge",
                                            image_uri=IMAGE, install_requirements=False, settings=settings,
                                            poll_interval_seconds=0.2, message_interval_seconds=0.5)
        root = f"s3://{ARTIFACTS_BUCKET}/rlhf"
        resources = {"preset": PresetResource(), "io_manager": ManifestIOManager(base_dir=f"{root}/manifests"),
                     "artifacts": ArtifactStoreResource(root=root),
                     "compute": ComputeBackend(local=LocalComputeBackend(scratch_dir=str(tmp_path / "scratch")),
                                               sagemaker=sagemaker, backend="sagemaker"),
                     "labeling": LabelingResource(db_path=str(tmp_path / "labels.sqlite"))}
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", DAGSTER)
        boto3.setup_default_session()
        s3fs.S3FileSystem.clear_instance_cache()
        reset_recording(aws)
        job_role = {"AWS_ACCESS_KEY_ID": JOB, "AWS_SECRET_ACCESS_KEY": "x"}
        config = {"ops": {"sft_model": {"config": {"max_train_rows": 16}}}}
        with project_instance(tmp_path / "project") as instance, SageMakerPlatform(
                tmp_path / "platform", credentials=job_role) as platform:
            result = materialize(all_assets, selection=[AssetKey("sft_model")], resources=resources,
                                 instance=instance, run_config=config)
        calls = read_recording(recording)
    logs = platform.logs[-1][-3000:] if platform.logs else ""
    assert result.success and platform.exit_codes == [0], logs
    (create,) = platform.requests
    assert create["EnableNetworkIsolation"] is True and create["VpcConfig"]["Subnets"] == ["subnet-0a1b2c3d"]
    assert create["ResourceConfig"]["VolumeKmsKeyId"] == volume_key
    # The isolated container made no call of its own: every request was signed by Dagster or by the job role.
    assert {call.principal for call in calls} == {DAGSTER, JOB}
    operations = {(call.principal, call.operation) for call in calls}
    assert {(JOB, "UploadPart"), (DAGSTER, "CopyObject"), (DAGSTER, "CreateTrainingJob"),
            (DAGSTER, "ListTrainingJobs"), (DAGSTER, "DeleteObjects")} <= operations, "the model went up in parts"

    output_prefix = "rlhf-assets/sagemaker/output/"

    def object_key(bucket: str, key: str) -> str | None:
        return output_key if bucket == BUCKET and key.startswith(output_prefix) else bucket_keys.get(bucket)

    keys = [*bucket_keys.values(), output_key, volume_key]
    policies = {DAGSTER: policy("dagster-policy.json", keys), JOB: policy("job-role-policy.json", keys)}
    needed = [(call.principal, permission) for call in calls for permission in required(call, object_key)]
    needed += [(JOB, permission) for permission in for_the_job_role(create)]
    denied = sorted({f"{who}: {p.action} on {p.resource} {p.why}" for who, p in needed
                     if not allowed(policies[who], p)})
    assert denied == [], "\n".join(denied)
    assert {p.action for _, p in needed} >= {"kms:GenerateDataKey", "kms:Decrypt", "iam:PassRole",
                                              "sagemaker:AddTags", "kms:Encrypt", "kms:CreateGrant"}
    # Not wider than it says: another prefix, another key, another role.
    for who, outside in [(DAGSTER, Permission("s3:PutObject", f"arn:aws:s3:::{BUCKET}/elsewhere/x")),
                         (JOB, Permission("s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/rlhf-assets/sagemaker/x")),
                         (JOB, Permission("s3:PutObject", f"arn:aws:s3:::{ARTIFACTS_BUCKET}/rlhf/x")),
                         (DAGSTER, Permission("kms:Decrypt", "arn:aws:kms:us-east-1:123456789012:key/other",
                                              (("kms:ViaService", "s3.us-east-1.amazonaws.com"),))),
                         (DAGSTER, Permission("kms:Decrypt", output_key)),  # not through S3
                         (DAGSTER, Permission("iam:PassRole", "arn:aws:iam::123456789012:role/admin",
                                              (("iam:PassedToService", "sagemaker.amazonaws.com"),)))]:
        assert not allowed(policies[who], outside), outside


def test_the_job_roles_trust_policy_names_sagemaker_and_this_account() -> None:
    trust = json.loads(Template((PROJECT_ROOT / "deploy" / "iam" / "job-role-trust-policy.json").read_text())
                       .substitute(ACCOUNT="123456789012", REGION="us-east-1"))
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"} and statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}
