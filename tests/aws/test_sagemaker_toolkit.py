"""Steps run the way the training image runs them: the real `sagemaker-training` toolkit, two processes, S3 Pipes.

`tests/sagemaker_platform.py` plays only the SageMaker service (the /opt/ml layout from the captured
CreateTrainingJob request, the uncompressed model upload, `Failed` + the failure file); the toolkit downloads our
source tarball from the moto server, installs its requirements and starts `rlhf_entry.py`, which launches the step
on two CPU processes with accelerate. Both ranks write their own Pipes chunk streams, which the backend's reader
merges.
"""

from pathlib import Path
from typing import Any

import boto3
import pytest
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, asset, instance_for_test, materialize

from rlhf_assets.compute.base import StepLaunch
from rlhf_assets.compute.sagemaker import SageMakerComputeBackend
from rlhf_assets.presets import get_preset
from rlhf_assets.resources import recorded_manifest
from rlhf_assets.step_contracts.models import SFTRequest
from rlhf_assets.storage import ArtifactStore, Manifest
from tests.aws.test_sagemaker import ROLE
from tests.conftest import project_instance, publish_project
from tests.moto_aws import BUCKET
from tests.sagemaker_platform import SageMakerPlatform

pytestmark = pytest.mark.aws

ROOT = f"s3://{BUCKET}/rlhf"  # the artifact root of `_resources`


@pytest.fixture(scope="module")
def inputs(aws, tmp_path_factory, upstream: Path) -> dict[str, Manifest]:
    """The SFT step's inputs: the session's upstream chain, published into the S3 artifact root."""
    project = tmp_path_factory.mktemp("project")
    publish_project(upstream, ROOT, project / "dagster_home")
    with project_instance(project) as instance:
        return {name: recorded_manifest(instance, AssetKey(name), f"{ROOT}/manifests")
                for name in ("base_model", "preference_dataset")}


def _run(request: StepLaunch) -> tuple[Any, list[str]]:
    backend = SageMakerComputeBackend(role_arn=ROLE, bucket=BUCKET, poll_interval_seconds=0.2,
                                      message_interval_seconds=0.5)

    @asset(name=request.asset)
    def step(context: AssetExecutionContext) -> MaterializeResult:
        run = backend.run_step(context, request, ArtifactStore(ROOT))
        uri, content_hash, _ = run.publish(ArtifactStore(ROOT), request.asset)
        return MaterializeResult(metadata={**run.metadata, "artifact": uri, "content_hash": content_hash})

    with instance_for_test() as instance:
        result = materialize([step], instance=instance, raise_on_error=False)
        logs = [str(entry.user_message) for entry in instance.all_logs(result.run_id)]
    return result, logs


def test_sft_on_two_processes_through_the_toolkit_reports_every_rank(aws, inputs, tmp_path: Path) -> None:
    train = get_preset("tiny").sft.model_copy(update={"max_train_rows": 32, "save_steps": 1})
    request = StepLaunch(step="sft", asset="sft_model", inputs=inputs, wire=SFTRequest(train=train).wire(),
                         resume_key={"t": 1}, num_processes=2, instance_type="ml.g5.12xlarge")
    with SageMakerPlatform(tmp_path / "platform") as platform:
        result, logs = _run(request)
    assert result.success, platform.logs[-1][-4000:] if platform.logs else ""
    assert platform.exit_codes == [0] and platform.requests[0]["Environment"]["RLHF_NUM_PROCESSES"] == "2"
    joined = "\n".join(logs)
    # Each rank's own chunk stream reached Dagster: its start line, and rank 0's training lines and report.
    assert "[rank 0/2 on algo-1] step started" in joined and "[rank 1/2 on algo-1] step started" in joined
    assert "SFT on 32 demonstrations" in joined
    metadata = result.asset_materializations_for_node("sft_model")[0].metadata
    assert metadata["eval_perplexity"].value > 1 and metadata["training_job_name"].value.startswith("rlhf-sft-model-")
    # The chunks live under the documented prefix, one stream per rank.
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="rlhf-assets/sagemaker/pipes/")
            .get("Contents", [])]
    assert any("/rank-0/" in k for k in keys) and any("/rank-1/" in k for k in keys)
    # The model was adopted by server-side copy into the content-addressed place, with the step's own hash.
    uri = metadata["artifact"].value
    assert uri.startswith("sft_model/") and ArtifactStore(ROOT).is_complete(uri)
    assert uri.endswith(metadata["content_hash"].value[:16])


def test_a_failing_step_honours_its_failure_file_and_names_the_reason(aws, inputs, tmp_path: Path) -> None:
    request = StepLaunch(step="sft", asset="sft_model", inputs={"base_model": inputs["base_model"]},
                          wire=SFTRequest(train=get_preset("tiny").sft).wire(), resume_key={"t": 2})
    with SageMakerPlatform(tmp_path / "platform") as platform:
        result, logs = _run(request)
    assert not result.success and platform.exit_codes == [1]
    # The step's own failure file is kept by the toolkit (not replaced by its generic ExecuteUserScriptError).
    assert platform.failures[0].startswith("bad input: input channel 'preference_dataset' is missing")
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "failed: bad input: input channel 'preference_dataset' is missing" in str(failure.event_specific_data.error)
    assert any("bad input: input channel 'preference_dataset' is missing" in line for line in logs)
