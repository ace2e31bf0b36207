"""The README's IAM policies are enough, and only they are used: the SageMaker path on moto with IAM enforced.

The Dagster process signs as a user holding exactly `deploy/iam/dagster-policy.json`; the job (the SageMaker
platform's channel download, model upload and log writing, and the toolkit inside the container) as a user holding
exactly `deploy/iam/job-role-policy.json`. moto enforces S3 actions and resource ARNs; it evaluates SageMaker and
CloudWatch Logs statements against the resource `*`, ignores `iam:PassRole` and conditions, and authorizes
HeadBucket as `s3:HeadBucket` where AWS authorizes it by `s3:ListBucket`; so only those statements' resources
are widened to `*`, conditions dropped and `s3:HeadBucket` granted beside `s3:ListBucket`. Everything else is
the file's text.
"""

import json
from pathlib import Path
from string import Template

import boto3
import pytest
import requests
import s3fs
from botocore.exceptions import ClientError
from dagster import AssetKey, materialize

from rlhf_assets.definitions import all_assets
from rlhf_assets.presets import PROJECT_ROOT
from tests.aws.test_sagemaker import _resources
from tests.conftest import project_instance, publish_project
from tests.moto_aws import BUCKET
from tests.sagemaker_platform import SageMakerPlatform

pytestmark = pytest.mark.aws

VALUES = {"BUCKET": BUCKET, "PREFIX": "rlhf-assets/sagemaker", "ARTIFACTS": f"{BUCKET}/rlhf",
          "ARTIFACTS_BUCKET": BUCKET, "ACCOUNT": "123456789012", "ROLE_NAME": "rlhf-sagemaker"}


def policy(name: str) -> dict:
    """A policy file filled in for this bucket, with moto's blind spots (non-S3 resources, conditions) widened."""
    document = json.loads(Template((PROJECT_ROOT / "deploy" / "iam" / name).read_text()).substitute(VALUES))
    for statement in document["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if not all(action.startswith("s3:") for action in actions):
            statement["Resource"] = "*"
        if "s3:ListBucket" in actions:
            statement["Action"] = [*actions, "s3:HeadBucket"]
        statement.pop("Condition", None)
    return document


def user_with(iam, name: str, document: dict) -> dict[str, str]:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(document))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_sft_runs_on_sagemaker_with_exactly_the_documented_policies(aws, tmp_path: Path, upstream: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    publish_project(upstream, f"s3://{BUCKET}/rlhf", tmp_path / "project" / "dagster_home")
    with project_instance(tmp_path / "project") as instance:  # the job's inputs: the materializations it recorded
        iam = boto3.client("iam")
        dagster = user_with(iam, "dagster", policy("dagster-policy.json"))
        job = user_with(iam, "sagemaker-job", policy("job-role-policy.json"))
        requests.post(f"{aws['AWS_ENDPOINT_URL']}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        try:
            for key, value in dagster.items():
                monkeypatch.setenv(key, value)
            boto3.setup_default_session()
            s3fs.S3FileSystem.clear_instance_cache()  # s3fs keeps filesystems, and their credentials, per process
            outside = boto3.client("s3")
            with pytest.raises(ClientError, match="AccessDenied"):  # the policy is not wider than it says
                outside.put_object(Bucket=BUCKET, Key="elsewhere/x", Body=b"1")
            with SageMakerPlatform(tmp_path / "platform", credentials=job) as platform:
                result = materialize(all_assets, selection=[AssetKey("sft_model")],
                                     resources=_resources(tmp_path, "sagemaker"), instance=instance,
                                     raise_on_error=False,
                                     run_config={"ops": {"sft_model": {"config": {"max_train_rows": 16}}}})
            logs = platform.logs[-1][-3000:] if platform.logs else ""
            assert result.success and platform.exit_codes == [0], logs
            event = result.asset_materializations_for_node("sft_model")[0]
            assert event.metadata["artifact_uri"].value.startswith(f"s3://{BUCKET}/rlhf/sft_model/")
        finally:
            requests.post(f"{aws['AWS_ENDPOINT_URL']}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()
            boto3.setup_default_session()
            s3fs.S3FileSystem.clear_instance_cache()
